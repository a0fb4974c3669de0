"""Token-major reads of an SAE's codes over a document set: the set's contexts, a unit's worth
at a time, masked to the set's tokens (BOS, padding, special tokens and other documents' tokens
left out).

A scan costs what it reads: ``ctx_len x code_cap`` code entries per context holding any of the
set's tokens, so a filtered statistic costs in proportion to the matching documents' tokens,
never the store's. Only units whose codes are committed are read (a store still being
written); each block says how many of the set's tokens it covered.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from actstore.query.filters import DocumentSet
from actstore.store.codes import read_codes
from actstore.store.layout import FLAG_SPECIAL, token_array
from actstore.store.stats import HIST_EDGES

if TYPE_CHECKING:
    from actstore.store.store import Store

__all__ = ["CodeBlock", "scan_codes", "set_totals"]


@dataclass(frozen=True)
class CodeBlock:
    """The codes of the set's tokens in some contexts: ``doc``, ``ctx`` and ``flat`` (token
    index) per token ``[n]``, ``idx`` ``[n, code_cap]`` (-1: no latent) and ``val`` (float32,
    or None when not asked for)."""

    doc: np.ndarray
    ctx: np.ndarray
    flat: np.ndarray
    idx: np.ndarray
    val: np.ndarray | None


def scan_codes(store: Store, sae: str, docs: DocumentSet, *, values: bool = True) -> Iterator[CodeBlock]:
    """The set's codes, one block per unit (one shard of each code array), in token order."""
    ctx_len, per_unit = store.meta.ctx_len, store.meta.contexts_per_unit
    contexts = docs.contexts
    done = np.asarray(store.units_done(store.sae_stage(sae)), np.int64)
    units = contexts // per_unit
    contexts, units = contexts[np.isin(units, done)], units[np.isin(units, done)]
    for part in np.split(contexts, np.flatnonzero(np.diff(units)) + 1) if contexts.size else []:
        slots = docs.slots(part)
        keep = (slots >= 0) & ((store.read_contexts(token_array("flags"), part) & FLAG_SPECIAL) == 0)  # chat markers out
        codes = read_codes(store, sae, part, values=values)
        assert codes.idx is not None
        idx = codes.idx[keep]
        val = codes.val[keep].astype(np.float32) if codes.val is not None else None
        flat = part[:, None] * ctx_len + np.arange(ctx_len)[None, :]
        yield CodeBlock(doc=slots[keep], ctx=np.broadcast_to(part[:, None], keep.shape)[keep], flat=flat[keep],
                        idx=idx, val=val)


def set_totals(store: Store, sae: str, d_sae: int, docs: DocumentSet) -> dict[str, np.ndarray]:
    """The SAE statistics ``density()`` reads (``tokens``, ``fired``, ``sum``, ``max``, ``hist``
    on the bins of :data:`HIST_EDGES`), computed over the set's tokens instead of the store's."""
    n_bins = HIST_EDGES.size + 1
    tokens = 0
    fired = np.zeros(d_sae, np.int64)
    total = np.zeros(d_sae, np.float64)
    top = np.zeros(d_sae, np.float32)
    hist = np.zeros(d_sae * n_bins, np.int64)
    for block in scan_codes(store, sae, docs):
        assert block.val is not None
        tokens += block.doc.size
        on = block.idx >= 0
        latent, value = block.idx[on].astype(np.int64), block.val[on]
        fired += np.bincount(latent, minlength=d_sae)
        total += np.bincount(latent, weights=value, minlength=d_sae)
        np.maximum.at(top, latent, value)
        hist += np.bincount(latent * n_bins + np.searchsorted(HIST_EDGES, value, side="right"), minlength=d_sae * n_bins)
    return {"tokens": np.asarray([tokens]), "fired": fired, "sum": total, "max": top, "hist": hist.reshape(d_sae, n_bins)}
