"""Output logits of an SAE's latents: ``W_dec[l] @ W_U``, the direct effect of each latent's
decoder direction on the next-token logits (sae_vis / Neuronpedia convention: the final norm is
left out). Computed once per SAE and kept in the store (``logits/<sae>/``, see STORE.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from actstore.models.capture import decoder_layers
from actstore.models.sites import parse_site
from actstore.store.logits import LOGITS_K, OutputLogits, write_output_logits
from actstore.store.store import utc_now

if TYPE_CHECKING:
    from actstore.live.session import LiveSession

__all__ = ["compute_output_logits", "keep_output_logits"]

BLOCK = 256  # latents per matmul: bounds the [block, vocab] buffer (256 x 256k float32 = 256 MiB)


def decoder_to_residual(model: Any, site: str, W_dec: torch.Tensor) -> torch.Tensor:
    """Decoder directions in the residual stream: attn.hook_z directions pass through o_proj."""
    spec = parse_site(site)
    if spec.kind == "attn_z":
        o_proj = decoder_layers(model)[spec.layer].self_attn.o_proj.weight  # [d_model, n_heads*head_dim]
        return W_dec @ o_proj.float().T
    return W_dec


def compute_output_logits(model: Any, W_dec: np.ndarray, site: str, *, vocab: int, k: int = LOGITS_K) -> OutputLogits:
    """Top and bottom ``k`` of ``W_dec @ W_U`` per latent over the first ``vocab`` token ids."""
    W_U = model.get_output_embeddings().weight[:vocab].float()  # [vocab, d_model]
    tops, bottoms = [], []
    for start in range(0, W_dec.shape[0], BLOCK):
        block = torch.tensor(W_dec[start : start + BLOCK], device=W_U.device)
        with torch.inference_mode():
            logits = decoder_to_residual(model, site, block) @ W_U.T
            tops.append(torch.topk(logits, k, dim=-1))
            bottoms.append(torch.topk(logits, k, dim=-1, largest=False))
    cat = lambda parts, attr: torch.cat([getattr(p, attr) for p in parts]).cpu().numpy()  # noqa: E731
    return OutputLogits(cat(tops, "indices").astype(np.int32), cat(tops, "values"),
                        cat(bottoms, "indices").astype(np.int32), cat(bottoms, "values"))


def keep_output_logits(session: LiveSession, sae: str) -> OutputLogits:
    """Compute an SAE's output logits with the session's model and write them into its store."""
    loaded = session.sae(sae)
    vocab = min(len(session.tokenizer), int(session.model.config.vocab_size))
    out = compute_output_logits(session.model, loaded.weights.W_dec / loaded.info.input_scale, loaded.info.site, vocab=vocab)
    write_output_logits(session.store.reopen(mode="r+"), sae, out, {"sae_sha256": loaded.info.sha256, "vocab": vocab, "computed": utc_now(),
                                                  "model": str((session.store.meta.model or {}).get("name"))})
    return out
