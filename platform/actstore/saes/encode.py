"""SAE encoding and decoding on the worker's device, the sparse code form, and a plain reference.

JumpReLU (Gemma Scope): ``pre = x @ W_enc + b_enc``, ``f = pre * (pre > threshold)``.
ReLU (SAELens standard): ``f = relu(x' @ W_enc + b_enc)``.
TopK (SAELens): the k largest of ``pre``, passed through relu, zeros elsewhere.
``x' = x - b_dec`` when ``apply_b_dec_to_input``, else ``x``. Decoding: ``f @ W_dec + b_dec``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from actstore.saes.formats import SAEWeights

__all__ = ["Codes", "SAEEncoder", "encode_reference", "sparse_codes"]


class Codes(NamedTuple):
    """Sparse codes of N tokens: the ``cap`` largest latents per token, by value descending."""

    idx: torch.Tensor  # [N, cap] int32, -1 past the token's L0
    val: torch.Tensor  # [N, cap] float32, 0 past the token's L0
    l0: torch.Tensor  # [N] int32: true number of non-zero latents (may exceed cap)


class SAEEncoder:
    """An SAE's parameters on a device, encoding float32 in batches."""

    def __init__(self, weights: SAEWeights, device: str | torch.device = "cpu") -> None:
        self.weights = weights
        self.device = torch.device(device)
        # torch.tensor copies: Ray hands workers read-only arrays
        as_t = lambda a: torch.tensor(a, device=self.device)  # noqa: E731
        self.W_enc, self.W_dec = as_t(weights.W_enc), as_t(weights.W_dec)
        self.b_enc, self.b_dec = as_t(weights.b_enc), as_t(weights.b_dec)
        self.threshold = None if weights.threshold is None else as_t(weights.threshold)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Dense latents [N, d_sae] (float32) of activations [N, d_in]."""
        x = x.to(self.device, torch.float32)
        if self.weights.apply_b_dec_to_input:
            x = x - self.b_dec
        pre = x @ self.W_enc + self.b_enc
        arch = self.weights.architecture
        if arch == "jumprelu":
            assert self.threshold is not None  # SAEWeights guarantees it
            return pre * (pre > self.threshold)
        if arch == "relu":
            return torch.relu(pre)
        top = torch.topk(pre, k=int(self.weights.k or 0), dim=-1)
        return torch.zeros_like(pre).scatter_(-1, top.indices, torch.relu(top.values))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return f.to(self.device, torch.float32) @ self.W_dec + self.b_dec


def sparse_codes(f: torch.Tensor, cap: int) -> Codes:
    """The sparse form of dense latents: at most ``cap`` per token, largest first."""
    l0 = (f != 0).sum(-1, dtype=torch.int32)
    width = min(cap, f.shape[-1])
    top = torch.topk(f, k=width, dim=-1, sorted=True)
    keep = torch.arange(width, device=f.device)[None, :] < l0[:, None]
    idx = torch.where(keep, top.indices.to(torch.int32), torch.full_like(top.indices, -1, dtype=torch.int32))
    val = torch.where(keep, top.values, torch.zeros_like(top.values))
    if width < cap:  # an SAE narrower than the cap: pad to the configured width
        pad = cap - width
        idx = torch.nn.functional.pad(idx, (0, pad), value=-1)
        val = torch.nn.functional.pad(val, (0, pad), value=0.0)
    return Codes(idx, val, l0)


def encode_reference(weights: SAEWeights, x: np.ndarray) -> np.ndarray:
    """The formulas written out in numpy float64, one token at a time: the slow, obvious twin."""
    out = np.zeros((x.shape[0], weights.d_sae), dtype=np.float64)
    W_enc, b_enc = weights.W_enc.astype(np.float64), weights.b_enc.astype(np.float64)
    for i, row in enumerate(np.asarray(x, dtype=np.float64)):
        xin = row - weights.b_dec if weights.apply_b_dec_to_input else row
        pre = xin @ W_enc + b_enc
        if weights.architecture == "jumprelu":
            assert weights.threshold is not None
            out[i] = pre * (pre > weights.threshold)
        elif weights.architecture == "relu":
            out[i] = np.maximum(pre, 0)
        else:
            top = np.argsort(-pre, kind="stable")[: weights.k]
            out[i, top] = np.maximum(pre[top], 0)
    return out


