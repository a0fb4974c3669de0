"""Building the index as plain functions (the Ray job in ``cluster/index.py`` only schedules them).

Map (one task per extraction unit): read the unit's token-major codes once, drop BOS/padding,
group the non-zeros by latent bucket and write them to one staging object, bucket after bucket,
so a reduce task reads its part of a unit with one range read. The unit's manifest records how
many entries each bucket got. Reduce (one task per bucket, ``index/reduce.py``): read its part of
every unit, rank by (latent, value descending, token), lay each latent's ranks out in blocks
(``index/postings.py``), write the bucket's arrays, then its manifest. Memory is bounded by a
unit (map) and ``bucket_nnz`` entries (reduce: a larger bucket is reduced in slices).
"""

from __future__ import annotations

import math

import numpy as np

from actstore.config import IndexConfig
from actstore.errors import ConfigError, UnitNotDoneError
from actstore.index.layout import IndexPlan, map_stage, staging_key
from actstore.index.profile import PROFILE_TOP, stage_profile
from actstore.store.codes import read_codes, require_current_codes
from actstore.store.dtypes import storage_dtype
from actstore.store.layout import NOT_TEXT, Compression, token_array
from actstore.store.stats import current_totals
from actstore.store.store import Store

__all__ = ["ARRAYS", "BLOCK", "BUCKET_NNZ", "CHUNK", "map_unit", "plan_index", "read_bucket_part", "staging_dtypes"]

BUCKET_NNZ = IndexConfig.model_fields["bucket_nnz"].default
BLOCK = IndexConfig.model_fields["block"].default
CHUNK = 65_536  # entries per inner chunk of the token and value arrays: the unit of a top-k read
# each bucket array's dtype and codec chain (benchmarks/bench_code_bytes.py compares them on real codes)
ARRAYS: dict[str, Compression] = {"offsets": "zstd", "token_gap": "shuffle-zstd", "value": "shuffle-zstd"}


def plan_index(store: Store, sae: str, *, bucket_nnz: int = BUCKET_NNZ, block: int = BLOCK,
               exclude_flags: int = NOT_TEXT) -> IndexPlan:
    """Split the latents into buckets of at most ``bucket_nnz`` expected entries.

    The expected count comes from the per-unit ``fired`` statistics of the committed units (an
    upper bound: tokens over the code cap keep fewer latents in the codes).
    """
    info = next((s for s in store.meta.saes if s.name == sae), None)
    if info is None:
        known = [s.name for s in store.meta.saes]
        raise ConfigError(f"the store at {store.location.url!r} has no SAE {sae!r}; it has {known or 'none'}")
    require_current_codes(store, f"index SAE {sae!r}")
    if bucket_nnz < 1 or block < 1:
        raise ConfigError(f"bucket_nnz and block must be positive, got {bucket_nnz} and {block}")
    units = store.units_done(info.stage)
    if not units:
        raise UnitNotDoneError(f"no unit of stage {info.stage!r} of {store.location.url!r} is committed yet; nothing to index")
    expected = int(current_totals(store, "saes", sae, ("fired",), info.stage)["fired"].sum())
    n_buckets = min(info.d_sae, max(1, math.ceil(expected / bucket_nnz)))
    per_bucket = math.ceil(info.d_sae / n_buckets)
    return IndexPlan(sae=sae, d_sae=info.d_sae, latents_per_bucket=per_bucket, n_buckets=math.ceil(info.d_sae / per_bucket),
                     units=units, exclude_flags=exclude_flags, value_dtype=info.value_dtype, block=block,
                     profile_top=PROFILE_TOP)


def map_unit(store: Store, plan: IndexPlan, unit: int) -> list[int]:
    """Stage one unit's non-zeros grouped by bucket; commit and return the entries per bucket.

    Staged object: for each bucket in order, its entries' unit-local token index, bucket-local
    latent and value (storage dtype), each as a contiguous run, in the narrowest types that hold
    them (:func:`staging_dtypes`).
    """
    contexts = store.grid.contexts(unit)
    rows = slice(contexts.start, contexts.stop)
    codes = read_codes(store, plan.sae, rows, checked=False)  # the plan's units are committed
    assert codes.idx is not None and codes.val is not None
    idx, val = codes.idx.reshape(-1), codes.val.reshape(-1).view(storage_dtype(plan.value_dtype))
    flags = np.asarray(store.array(token_array("flags"))[rows]).reshape(-1)
    cap = idx.size // flags.size
    keep = (idx >= 0) & np.repeat((flags & plan.exclude_flags) == 0, cap)
    at = np.flatnonzero(keep)
    latent = idx[at]
    bucket = (latent // plan.latents_per_bucket).astype(np.uint16 if plan.n_buckets <= 2**16 else np.int64)
    order = np.argsort(bucket, kind="stable")  # keeps token order within a bucket
    counts = np.bincount(bucket, minlength=plan.n_buckets)
    token_type, latent_type = staging_dtypes(store, plan)
    token = (at // cap).astype(token_type)[order]
    local = (latent % plan.latents_per_bucket).astype(latent_type)[order]
    value = val[at][order]
    parts, start = [], 0
    for n in counts.tolist():
        parts += [token[start : start + n].tobytes(), local[start : start + n].tobytes(), value[start : start + n].tobytes()]
        start += n
    store.files.write_bytes(staging_key(plan, unit), b"".join(parts))
    stage_profile(store, plan, unit, flags, token, counts.tolist())
    store.manifests.commit(map_stage(plan.sae), unit, {"build": plan.build_id, "counts": counts.tolist()})
    return [int(c) for c in counts]


def staging_dtypes(store: Store, plan: IndexPlan) -> tuple[np.dtype, np.dtype]:
    """Staged (unit-local token, bucket-local latent) dtypes: uint16 when a unit has at most 65,536
    token slots (64 contexts of 1,024) or a bucket at most 65,536 latents, else uint32."""
    def narrow(n: int) -> np.dtype:
        return np.dtype(np.uint16 if n <= 2**16 else np.uint32)

    return narrow(store.meta.contexts_per_unit * store.meta.ctx_len), narrow(plan.latents_per_bucket)


def read_bucket_part(store: Store, plan: IndexPlan, unit: int, start: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(global token, bucket-local latent, stored value) of the ``n`` entries a unit staged for a
    bucket, the first being its ``start``-th entry of the unit (the counts of the buckets before)."""
    token_type, latent_type = staging_dtypes(store, plan)
    value_type = storage_dtype(plan.value_dtype)
    size = token_type.itemsize + latent_type.itemsize + value_type.itemsize
    raw = store.files.read_range(staging_key(plan, unit), start * size, (start + n) * size) if n else b""
    token = np.frombuffer(raw, token_type, n, 0).astype(np.int64)
    latent = np.frombuffer(raw, latent_type, n, token_type.itemsize * n)
    value = np.frombuffer(raw, value_type, n, (token_type.itemsize + latent_type.itemsize) * n)
    first_token = store.grid.contexts(unit).start * store.meta.ctx_len
    return token + first_token, latent, value
