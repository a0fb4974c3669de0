"""Kept output logits of an SAE's latents: the top and bottom ``k`` tokens of ``W_dec[l] @ W_U``.

Computed once per SAE by :mod:`actstore.live.logits` (it needs the model's unembedding) and
written here as four ``[d_sae, k]`` arrays under ``logits/<sae>/``, so readers need no model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import zarr

if TYPE_CHECKING:
    from actstore.store.store import Store

__all__ = ["LOGITS_ATTRIBUTE", "LOGITS_K", "OutputLogits", "logits_group", "read_output_logits", "write_output_logits"]

LOGITS_K = 10
LOGITS_ATTRIBUTE = "actstore_logits"
_ARRAYS = {"top_ids": np.int32, "top_values": np.float32, "bottom_ids": np.int32, "bottom_values": np.float32}


class OutputLogits(NamedTuple):
    """Rows ``[n, k]``: token ids and logit contributions, top largest first, bottom smallest first."""

    top_ids: np.ndarray
    top_values: np.ndarray
    bottom_ids: np.ndarray
    bottom_values: np.ndarray


def logits_group(sae: str) -> str:
    return f"logits/{sae}"


def write_output_logits(store: Store, sae: str, logits: OutputLogits, attributes: dict[str, Any]) -> None:
    """Write (or replace) an SAE's kept logits; the group attribute is written last, so a
    reader that finds it finds complete arrays. Each array carries ``logical_dtype`` and
    ``per_token`` like every array of the store (STORE.md)."""
    group = store.group.require_group(logits_group(sae))
    group.attrs.pop(LOGITS_ATTRIBUTE, None)
    for name, dtype in _ARRAYS.items():
        data = np.ascontiguousarray(getattr(logits, name), dtype=dtype)
        arr = zarr.create_array(store=store.group.store, name=f"{store.group.path}/{logits_group(sae)}/{name}".strip("/"),
                                shape=data.shape, chunks=(min(4096, data.shape[0]), data.shape[1]), dtype=dtype,
                                attributes={"logical_dtype": np.dtype(dtype).name, "per_token": False}, overwrite=True)
        arr[...] = data
    group.attrs[LOGITS_ATTRIBUTE] = {"k": int(logits.top_ids.shape[1]), **attributes}


def read_output_logits(store: Store, sae: str, latent: int) -> tuple[OutputLogits, dict[str, Any]] | None:
    """One latent's kept logits (rows of shape ``[1, k]``) and the group's attribute; None if not kept."""
    try:
        group = store.group[logits_group(sae)]
    except KeyError:
        return None
    attrs = group.attrs.get(LOGITS_ATTRIBUTE)
    if not isinstance(attrs, dict):
        return None
    rows = {name: np.asarray(store.array(f"{logits_group(sae)}/{name}")[latent : latent + 1]) for name in _ARRAYS}
    return OutputLogits(**rows), dict(attrs)
