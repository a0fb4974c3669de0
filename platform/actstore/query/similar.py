"""Latents with similar decoder directions: the cosine of ``W_dec`` rows (Neuronpedia's
"similar features"), within one SAE or against another SAE of the same store.

The decoder weights come from where the store keeps its SAEs (:func:`actstore.store.sae_files.load_store_sae`:
the copy inside the store, else the recorded local or Hub path, checked against the recorded
SHA-256). :func:`decoder_rows` loads them without going to the network (a Hub SAE must already
be in the local cache) and keeps the unit-normalised rows of the last
:data:`DECODERS_KEPT` SAEs (float32: 16,384 x 2,304 is 144 MiB). The arithmetic takes plain arrays
(:func:`nearest_rows`), so a caller holding decoder weights from elsewhere (a copy inside the
store, a training run) uses it the same way.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from actstore.errors import ConfigError, DecoderNotFoundError

if TYPE_CHECKING:
    from actstore.store.store import Store

__all__ = ["SIMILAR_SCHEMA", "decoder_rows", "nearest_rows", "similar_latents", "unit_rows"]

SIMILAR_SCHEMA = pl.Schema({"sae": pl.String(), "latent": pl.Int64(), "cosine": pl.Float32()})
DECODERS_KEPT = 2  # SAEs whose normalised decoder rows a process keeps
RETRY_S = 60.0  # a failed load is not tried again for this long (a page asks on every request)
_KEPT: dict[str, np.ndarray] = {}  # by the SAE files' sha256
_FAILED: dict[str, tuple[float, str]] = {}  # sha256 -> (when, why)
_LOCK = threading.Lock()


def unit_rows(W: np.ndarray) -> np.ndarray:
    """Rows of ``W`` scaled to unit length (all-zero rows stay zero), as float32."""
    W = np.asarray(W, np.float32)
    return W / np.maximum(np.linalg.norm(W, axis=1, keepdims=True), 1e-12)


def nearest_rows(query: np.ndarray, rows: np.ndarray, *, top: int = 10, exclude: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``top`` rows of ``rows`` (unit-normalised, ``[n, d]``) with the highest cosine to
    ``query`` (``[d]``, any length), leaving out row ``exclude``: (row ids, cosines), cosine descending."""
    if query.shape[-1] != rows.shape[1]:
        raise ConfigError(f"cannot compare a direction of width {query.shape[-1]} with decoder rows of width {rows.shape[1]}")
    q = np.asarray(query, np.float32)
    q = q / max(float(np.linalg.norm(q)), 1e-12)
    cos = np.asarray(rows, np.float32) @ q
    if exclude is not None:
        cos[exclude] = -np.inf
    k = min(top, cos.size - (exclude is not None))
    best = np.argpartition(-cos, k - 1)[:k] if k > 0 else np.zeros(0, np.int64)
    best = best[np.lexsort((best, -cos[best]))]
    return best.astype(np.int64), cos[best]


def decoder_rows(store: Store, sae: str) -> np.ndarray:
    """The unit-normalised decoder rows (``[d_sae, d_in]`` float32) of an SAE of ``store``, loaded
    from its recorded source on this machine; :class:`DecoderNotFoundError` when they cannot be."""
    from actstore.store.sae_files import load_store_sae

    info = next((s for s in store.meta.saes if s.name == sae), None)
    if info is None:
        raise ConfigError(f"the store has no SAE {sae!r}; it has {[s.name for s in store.meta.saes] or 'none'}")
    with _LOCK:
        found = _KEPT.get(info.sha256)
        if found is not None:
            return found
        failed = _FAILED.get(info.sha256)
        if failed is not None and time.monotonic() - failed[0] < RETRY_S:
            raise DecoderNotFoundError(failed[1])
        try:
            weights = load_store_sae(store, info, local_files_only=True)
        except (ConfigError, OSError) as exc:
            _FAILED[info.sha256] = (time.monotonic(), f"the decoder of SAE {sae!r} is not on this machine: {exc}")
            raise DecoderNotFoundError(_FAILED[info.sha256][1]) from None
        while len(_KEPT) >= DECODERS_KEPT:
            _KEPT.pop(next(iter(_KEPT)))
        found = _KEPT[info.sha256] = unit_rows(weights.W_dec)
        found.flags.writeable = False
        return found


def similar_latents(store: Store, sae: str, latent: int, *, other: str | None = None, top: int = 10) -> pl.DataFrame:
    """Latents of ``other`` (default: the same SAE) whose decoder directions are closest to
    ``latent``'s of ``sae`` by cosine, the latent itself left out. Both SAEs must write to the
    same width. Columns: :data:`SIMILAR_SCHEMA` (``sae`` names the SAE each latent belongs to)."""
    mine = decoder_rows(store, sae)
    if not 0 <= latent < mine.shape[0]:
        raise ConfigError(f"latent {latent} is out of range for SAE {sae!r} (d_sae={mine.shape[0]})")
    target = other or sae
    rows = mine if target == sae else decoder_rows(store, target)
    ids, cos = nearest_rows(mine[latent], rows, top=top, exclude=latent if target == sae else None)
    return pl.DataFrame({"sae": [target] * ids.size, "latent": ids, "cosine": cos}).cast(SIMILAR_SCHEMA)
