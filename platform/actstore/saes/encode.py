"""SAE encoding and decoding on the worker's device, the sparse code form, and a plain reference.

JumpReLU (Gemma Scope, SAELens): ``pre = x @ W_enc + b_enc``, ``f = relu(pre) * (pre > threshold)``.
The ReLU only matters where a threshold is negative (SAEs trained elsewhere have them): there
``pre * (pre > threshold)`` would keep a negative code that the reference zeroes.
ReLU (SAELens standard): ``f = relu(x' @ W_enc + b_enc)``.
TopK (SAELens): the k largest of ``pre``, passed through relu, zeros elsewhere.
``x' = x - b_dec`` when ``apply_b_dec_to_input``, else ``x``. Decoding: ``f @ W_dec + b_dec``.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import numpy as np
import torch

from actstore.saes.formats import SAEWeights

__all__ = ["Codes", "Nonzeros", "SAEEncoder", "encode_reference", "nonzeros", "sparse_codes"]


class Codes(NamedTuple):
    """Sparse codes of N tokens: the ``cap`` largest latents per token, by value descending."""

    idx: torch.Tensor  # [N, cap] int32, -1 past the token's L0
    val: torch.Tensor  # [N, cap] float32, 0 past the token's L0
    l0: torch.Tensor  # [N] int32: true number of non-zero latents (may exceed cap)


class SAEEncoder:
    """An SAE's parameters on a device, encoding float32 in batches.

    ``dtype`` is the dtype the weight matrices are held in: with bfloat16 they take half the
    memory and are upcast per call, so codes are the float32 encoder of the rounded weights
    (``weights.rounded("bfloat16")``); the vectors (biases, threshold) are rounded the same way
    and kept in float32. ``decoder=False`` leaves W_dec out (extraction only encodes).
    """

    def __init__(self, weights: SAEWeights, device: str | torch.device = "cpu", *, dtype: str = "float32",
                 decoder: bool = True) -> None:
        self.weights = weights
        self.device = torch.device(device)
        self.dtype = dtype
        matrix = torch.float32 if dtype == "float32" else torch.bfloat16
        # torch.tensor copies: Ray hands workers read-only arrays
        as_m = lambda a: torch.tensor(a, device=self.device).to(matrix)  # noqa: E731
        as_v = lambda a: as_m(a).float()  # noqa: E731
        self.W_enc = as_m(weights.W_enc)
        self.W_dec = as_m(weights.W_dec) if decoder else None
        self.b_enc, self.b_dec = as_v(weights.b_enc), as_v(weights.b_dec)
        self.threshold = None if weights.threshold is None else as_v(weights.threshold)
        self._set_fires_above()

    def _set_fires_above(self) -> None:
        # A JumpReLU or ReLU latent is non-zero exactly where pre > max(threshold, 0)
        self._fires_above = (self.threshold.clamp(min=0.0) if self.threshold is not None
                             else torch.zeros((), device=self.device)) if self.weights.architecture != "topk" else None

    @property
    def nbytes(self) -> int:
        """Bytes of the tensors this encoder holds."""
        tensors = [t for t in (self.W_enc, self.W_dec, self.b_enc, self.b_dec, self.threshold) if t is not None]
        return sum(t.numel() * t.element_size() for t in tensors)

    def to(self, device: str | torch.device, *, pin: bool = False) -> SAEEncoder:
        """A copy on ``device`` (``pin``: in page-locked host memory, for fast copies to a GPU)."""
        out = copy.copy(self)
        out.device = torch.device(device)
        move = (lambda t: t.pin_memory()) if pin else (lambda t: t.to(out.device, non_blocking=True))
        for name in ("W_enc", "W_dec", "b_enc", "b_dec", "threshold"):
            tensor = getattr(self, name)
            setattr(out, name, None if tensor is None else move(tensor))
        out._set_fires_above()
        return out

    def _pre(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, torch.float32)
        if self.weights.apply_b_dec_to_input:
            x = x - self.b_dec
        return torch.addmm(self.b_enc, x, self.W_enc.float())  # float() is a no-op on float32 weights

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Dense latents [N, d_sae] (float32) of activations [N, d_in]."""
        pre = self._pre(x)
        arch = self.weights.architecture
        if arch == "jumprelu":
            assert self.threshold is not None  # SAEWeights guarantees it
            return pre.masked_fill_(pre <= self.threshold, 0.0).clamp_(min=0.0)  # = relu(pre) * (pre > threshold)
        if arch == "relu":
            return pre.clamp_(min=0.0)
        top = torch.topk(pre, k=int(self.weights.k or 0), dim=-1)
        return torch.zeros_like(pre).scatter_(-1, top.indices, torch.relu(top.values))

    def encode_nonzeros(self, x: torch.Tensor) -> Nonzeros:
        """The non-zero latents of activations [N, d_in], equal to ``nonzeros(encode(x))``.

        JumpReLU and ReLU skip the dense output: one comparison of the pre-activations with
        ``max(threshold, 0)`` finds the firing entries, whose value is the pre-activation itself
        (a pass over [N, d_sae] fewer than masking, clamping and scanning the dense codes)."""
        if self._fires_above is None:
            return nonzeros(self.encode(x))
        pre = self._pre(x)
        rows, cols = (pre > self._fires_above).nonzero(as_tuple=True)
        return Nonzeros(rows, cols, pre[rows, cols], int(pre.shape[0]))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        if self.W_dec is None:
            raise ValueError("this encoder was built without its decoder (decoder=False)")
        return f.to(self.device, torch.float32) @ self.W_dec.float() + self.b_dec


class Nonzeros(NamedTuple):
    """The non-zero entries of dense latents [N, d_sae], in row-major order."""

    rows: torch.Tensor  # int64
    cols: torch.Tensor  # int64
    vals: torch.Tensor  # float32
    n: int

    def select(self, token_mask: torch.Tensor) -> Nonzeros:
        """The entries of the tokens where ``token_mask`` [N] is true."""
        keep = token_mask[self.rows]
        return Nonzeros(self.rows[keep], self.cols[keep], self.vals[keep], self.n)

    def l0(self) -> torch.Tensor:
        return torch.bincount(self.rows, minlength=self.n).to(torch.int32)


def nonzeros(f: torch.Tensor) -> Nonzeros:
    rows, cols = f.nonzero(as_tuple=True)
    return Nonzeros(rows, cols, f[rows, cols], int(f.shape[0]))


def sparse_codes(f: torch.Tensor | Nonzeros, cap: int) -> Codes:
    """The sparse form of dense latents: at most ``cap`` per token, by value descending, ties by
    latent id ascending. Works from the non-zeros only (one sort of them, no dense top-k)."""
    nz = f if isinstance(f, Nonzeros) else nonzeros(f)
    l0 = nz.l0()
    order = torch.sort(_token_value_key(nz.rows, nz.vals), stable=True).indices  # stable: ties keep id order
    rows, cols, vals = nz.rows[order], nz.cols[order], nz.vals[order]
    starts = torch.cumsum(l0, 0, dtype=torch.int64) - l0
    rank = torch.arange(rows.numel(), device=rows.device) - starts[rows]
    keep = rank < cap
    idx = torch.full((nz.n, cap), -1, dtype=torch.int32, device=rows.device)
    val = torch.zeros((nz.n, cap), dtype=nz.vals.dtype, device=rows.device)
    idx[rows[keep], rank[keep]] = cols[keep].to(torch.int32)
    val[rows[keep], rank[keep]] = vals[keep]
    return Codes(idx, val, l0)


def _token_value_key(rows: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
    """An int64 key ordering entries by token ascending, then value descending: one integer sort
    instead of two float sorts. The float32 bits become an unsigned order-preserving integer
    (positive floats above negative ones, each in numeric order), then are flipped for descent."""
    bits = vals.float().view(torch.int32).to(torch.int64)
    ordered = torch.where(bits >= 0, bits + 2**31, -1 - bits)  # in [0, 2**32), numeric order
    return rows * 2**32 + (2**32 - 1 - ordered)


def encode_reference(weights: SAEWeights, x: np.ndarray) -> np.ndarray:
    """The formulas written out in numpy float64, one token at a time: the slow, obvious twin."""
    out = np.zeros((x.shape[0], weights.d_sae), dtype=np.float64)
    W_enc, b_enc = weights.W_enc.astype(np.float64), weights.b_enc.astype(np.float64)
    for i, row in enumerate(np.asarray(x, dtype=np.float64)):
        xin = row - weights.b_dec if weights.apply_b_dec_to_input else row
        pre = xin @ W_enc + b_enc
        if weights.architecture == "jumprelu":
            assert weights.threshold is not None
            out[i] = np.maximum(pre, 0) * (pre > weights.threshold)
        elif weights.architecture == "relu":
            out[i] = np.maximum(pre, 0)
        else:
            top = np.argsort(-pre, kind="stable")[: weights.k]
            out[i, top] = np.maximum(pre[top], 0)
    return out


