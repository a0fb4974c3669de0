"""Output logits of an SAE's latents: ``W_dec[l] @ W_U``, the direct effect of each latent's
decoder direction on the next-token logits (sae_vis / Neuronpedia convention: the final norm is
left out). Computed once per SAE and kept in the store (``logits/<sae>/``, see STORE.md)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from actstore._hf import resolve_source
from actstore.config import HFSource
from actstore.errors import ConfigError
from actstore.models.capture import decoder_layers
from actstore.models.sites import parse_site
from actstore.store.logits import LOGITS_K, OutputLogits, write_output_logits
from actstore.store.store import utc_now

if TYPE_CHECKING:
    from actstore.live.session import LiveSession
    from actstore.store.store import Store

__all__ = ["compute_output_logits", "keep_logits_if_reachable", "keep_output_logits"]

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
    return _keep(session.store, sae, session.model, loaded.weights.W_dec / loaded.info.input_scale, loaded.info.sha256, vocab)


def _keep(store: Store, sae: str, model: Any, W_dec: np.ndarray, sha256: str, vocab: int) -> OutputLogits:
    site = next(s.site for s in store.meta.saes if s.name == sae)
    out = compute_output_logits(model, W_dec, site, vocab=vocab)
    write_output_logits(store.reopen(mode="r+"), sae, out, {"sae_sha256": sha256, "vocab": vocab, "computed": utc_now(),
                                                            "model": str((store.meta.model or {}).get("name"))})
    return out


def keep_logits_if_reachable(store: Store, saes: Sequence[str]) -> str:
    """Keep the output logits of ``saes`` when the store's model and their files are on this
    machine (nothing is downloaded: a Hub model must be in the local cache): what the index
    build does after it finishes, so a feature page has them without `actstore logits`. Returns
    a line saying what was kept, or why nothing was."""
    from actstore.models.loading import load_model
    from actstore.query.windows import store_tokenizer
    from actstore.store.sae_files import load_store_sae

    source = _local_model(store)
    if source is None:
        return (f"output logits not kept: the store's model is not on this machine; run `actstore logits "
                f"{store.location.url}` where it is")
    model = load_model(source, dtype="float32", device="cpu")
    vocab = min(len(store_tokenizer(store)), int(model.config.vocab_size))
    kept = []
    for info in (s for s in store.meta.saes if s.name in saes):
        try:
            weights = load_store_sae(store, info, local_files_only=True)
        except (ConfigError, OSError):
            continue
        _keep(store, info.name, model, weights.W_dec / info.input_scale, info.sha256, vocab)
        kept.append(info.name)
    missing = sorted(set(saes) - set(kept))
    return (f"output logits kept for {', '.join(kept) or 'no SAE'}"
            + (f"; not for {', '.join(missing)} (its files are not on this machine)" if missing else ""))


def _local_model(store: Store) -> HFSource | None:
    """The store's model as a source that loads without the network, or None."""
    recorded = (store.meta.model or {}).get("source")
    if not isinstance(recorded, dict):
        return None
    try:
        source = HFSource(**recorded)
        if source.package is not None or (source.gguf_file and os.path.isabs(source.gguf_file)):
            resolve_source(source)  # an installed package or a GGUF file on this machine
            return source
    except (ConfigError, ValueError, OSError):
        return None
    if source.id is None or os.path.isdir(source.id):
        return source
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(source.id, revision=source.revision, local_files_only=True)
    except Exception:  # not in the local cache, whatever the reason
        return None
    return source.model_copy(update={"id": folder, "revision": None})
