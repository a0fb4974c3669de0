"""Trainable TopK and JumpReLU SAEs whose forward is exactly :class:`SAEEncoder`'s formula, and
their SAELens folder (with the input scale folded into the weights, as Gemma Scope does).

JumpReLU uses straight-through estimators with a rectangle kernel for the threshold gradients
(Rajamanoharan et al. 2024): d/dθ of ``relu(pre) * H(pre - θ)`` is ``-(relu(θ)/ε) K((pre - θ)/ε)``
(the jump's height is relu(θ); thresholds here are exp(log θ) > 0, so it is θ) and of the L0
term ``H(pre - θ)`` is ``-(1/ε) K((pre - θ)/ε)``, ``K(z) = 1{|z| < 1/2}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["SAELENS_FILES", "SAELENS_LAYOUT_VERSION", "TrainableSAE", "save_saelens"]


def _kernel(pre: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
    return ((pre - threshold).abs() < bandwidth / 2).to(pre.dtype) / bandwidth


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, pre: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return torch.relu(pre) * (pre > threshold)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        pre, threshold = ctx.saved_tensors
        d_pre = grad * ((pre > threshold) & (pre > 0))
        d_threshold = (grad * -torch.relu(threshold) * _kernel(pre, threshold, ctx.bandwidth)).sum(0)
        return d_pre, d_threshold, None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, pre: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor, None]:
        pre, threshold = ctx.saved_tensors
        return None, (grad * -_kernel(pre, threshold, ctx.bandwidth)).sum(0), None


class TrainableSAE(nn.Module):
    """An SAE on (scaled) inputs. TopK subtracts ``b_dec`` before encoding (SAELens
    ``apply_b_dec_to_input``); JumpReLU does not (Gemma Scope)."""

    def __init__(self, architecture: str, d_in: int, d_sae: int, *, k: int = 32, bandwidth: float = 1e-3,
                 initial_threshold: float = 1e-3) -> None:
        super().__init__()
        self.architecture, self.k, self.bandwidth = architecture, k, bandwidth
        W_dec = torch.randn(d_sae, d_in)
        W_dec /= W_dec.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(W_dec)
        self.W_enc = nn.Parameter(W_dec.T.clone())
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.log_threshold = nn.Parameter(torch.full((d_sae,), float(torch.tensor(initial_threshold).log())),
                                          requires_grad=architecture == "jumprelu")

    @property
    def apply_b_dec_to_input(self) -> bool:
        return self.architecture == "topk"

    def pre(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.b_dec if self.apply_b_dec_to_input else x) @ self.W_enc + self.b_enc

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre(x)
        if self.architecture == "jumprelu":
            return _JumpReLU.apply(pre, self.log_threshold.exp(), self.bandwidth)  # type: ignore[no-any-return]
        top = torch.topk(pre, self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))

    def l0(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable (in the threshold) mean L0 of JumpReLU codes."""
        return _Step.apply(self.pre(x), self.log_threshold.exp(), self.bandwidth).sum(-1).mean()  # type: ignore[no-any-return]

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return f @ self.W_dec + self.b_dec

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Unit-norm decoder rows (the scale lives in the encoder), after every step."""
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))


SAELENS_FILES = ("cfg.json", "sae_weights.safetensors")  # what a saved SAE folder holds

# The SAELens cfg.json layout written: SAELens >= 6.0 keeps the hook, model and context under
# ``metadata`` with ``sae_lens_version``; a folder without it (or older) is converted as pre-6.0.
SAELENS_LAYOUT_VERSION = "6.0.0"


def save_saelens(sae: TrainableSAE, folder: str | Path, *, scale: float, hook_name: str,
                 model_name: str | None = None, context_size: int | None = None,
                 extra: dict[str, Any]) -> Path:
    """Write ``cfg.json`` (SAELens 6 layout) and ``sae_weights.safetensors`` for raw inputs: with
    inputs scaled by ``s`` in training, ``W_enc*s``, ``W_dec/s`` and ``b_dec/s`` give the same codes
    of raw ``x`` and reconstructions in raw units (thresholds act on the pre-activation and stay)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        tensors = {"W_enc": sae.W_enc * scale, "W_dec": sae.W_dec / scale, "b_enc": sae.b_enc.clone(),
                   "b_dec": sae.b_dec / scale}
        if sae.architecture == "jumprelu":
            tensors["threshold"] = sae.log_threshold.exp()
    save_file({k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}, str(folder / SAELENS_FILES[1]))
    d_sae, d_in = sae.W_dec.shape
    metadata = {"sae_lens_version": SAELENS_LAYOUT_VERSION, "hook_name": hook_name, "model_name": model_name,
                "context_size": context_size, "prepend_bos": True}
    cfg = {"architecture": sae.architecture, "d_in": d_in, "d_sae": d_sae, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": sae.apply_b_dec_to_input, "normalize_activations": "none",
           "reshape_activations": "hook_z" if hook_name.endswith("hook_z") else "none",
           **({"k": sae.k, "rescale_acts_by_decoder_norm": False} if sae.architecture == "topk" else {}),
           "metadata": {k: v for k, v in metadata.items() if v is not None},
           "actstore": {"input_scale": scale, "input_scale_folded": True, **extra}}
    (folder / SAELENS_FILES[0]).write_text(json.dumps(cfg, indent=1, sort_keys=True))
    return folder
