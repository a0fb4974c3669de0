"""Building the index as plain functions (the Ray job in ``cluster/index.py`` only schedules them).

Map (one task per extraction unit): read the unit's token-major codes once, drop BOS/padding,
group the non-zeros by latent bucket and write them to one staging object, bucket after bucket,
so a reduce task reads its part of a unit with one range read. The unit's manifest records how
many entries each bucket got. Reduce (one task per bucket): read its part of every unit, sort by
(latent, value descending, token), write the bucket's CSR arrays, then its manifest. Memory is
bounded by a unit (map) and a bucket (reduce); the plan picks buckets small enough.
"""

from __future__ import annotations

import math

import numpy as np
import zarr

from actstore.config import IndexConfig
from actstore.errors import ConfigError, UnitNotDoneError
from actstore.index.layout import IndexPlan, bucket_array, index_stage, map_stage, staging_key
from actstore.index.profile import PROFILE_TOP, stage_profile, write_bucket_profile
from actstore.store.dtypes import numpy_dtype, storage_dtype
from actstore.store.layout import NOT_TEXT, code_array, token_array
from actstore.store.stats import current_totals
from actstore.store.store import Store

__all__ = ["BUCKET_NNZ", "CHUNK", "descending_key", "map_unit", "plan_index", "read_bucket_part", "reduce_bucket"]

BUCKET_NNZ = IndexConfig.model_fields["bucket_nnz"].default
CHUNK = 65_536  # entries per inner chunk of the token and value arrays: the unit of a top-k read


def plan_index(store: Store, sae: str, *, bucket_nnz: int = BUCKET_NNZ,
               exclude_flags: int = NOT_TEXT) -> IndexPlan:
    """Split the latents into buckets of at most ``bucket_nnz`` expected entries.

    The expected count comes from the per-unit ``fired`` statistics of the committed units (an
    upper bound: tokens over the code cap keep fewer latents in the codes).
    """
    info = next((s for s in store.meta.saes if s.name == sae), None)
    if info is None:
        known = [s.name for s in store.meta.saes]
        raise ConfigError(f"the store at {store.location.url!r} has no SAE {sae!r}; it has {known or 'none'}")
    if bucket_nnz < 1:
        raise ConfigError(f"bucket_nnz must be positive, got {bucket_nnz}")
    units = store.units_done(info.stage)
    if not units:
        raise UnitNotDoneError(f"no unit of stage {info.stage!r} of {store.location.url!r} is committed yet; nothing to index")
    expected = int(current_totals(store, "saes", sae, ("fired",), info.stage)["fired"].sum())
    n_buckets = min(info.d_sae, max(1, math.ceil(expected / bucket_nnz)))
    per_bucket = math.ceil(info.d_sae / n_buckets)
    return IndexPlan(sae=sae, d_sae=info.d_sae, latents_per_bucket=per_bucket, n_buckets=math.ceil(info.d_sae / per_bucket),
                     units=units, exclude_flags=exclude_flags, value_dtype=info.value_dtype,
                     profile_top=PROFILE_TOP)


def map_unit(store: Store, plan: IndexPlan, unit: int) -> list[int]:
    """Stage one unit's non-zeros grouped by bucket; commit and return the entries per bucket.

    Staged object: for each bucket in order, its entries' unit-local token index (uint32),
    latent (int32) and value (storage dtype), each as a contiguous run.
    """
    contexts = store.grid.contexts(unit)
    rows = slice(contexts.start, contexts.stop)
    idx = np.asarray(store.array(code_array(plan.sae, "idx"))[rows]).reshape(-1)
    val = np.asarray(store.array(code_array(plan.sae, "val"))[rows]).reshape(-1)
    flags = np.asarray(store.array(token_array("flags"))[rows]).reshape(-1)
    cap = idx.size // flags.size
    keep = (idx >= 0) & np.repeat((flags & plan.exclude_flags) == 0, cap)
    at = np.flatnonzero(keep)
    latent = idx[at]
    bucket = (latent // plan.latents_per_bucket).astype(np.uint16 if plan.n_buckets <= 2**16 else np.int64)
    order = np.argsort(bucket, kind="stable")  # keeps token order within a bucket
    counts = np.bincount(bucket, minlength=plan.n_buckets)
    token, latent, value = (at // cap).astype(np.uint32)[order], latent[order], val[at][order]
    parts, start = [], 0
    for n in counts.tolist():
        parts += [token[start : start + n].tobytes(), latent[start : start + n].tobytes(), value[start : start + n].tobytes()]
        start += n
    store.files.write_bytes(staging_key(plan, unit), b"".join(parts))
    stage_profile(store, plan, unit, flags, token, counts.tolist())
    store.manifests.commit(map_stage(plan.sae), unit, {"build": plan.build_id, "counts": counts.tolist()})
    return [int(c) for c in counts]


def _entry_bytes(plan: IndexPlan) -> int:
    return 4 + 4 + storage_dtype(plan.value_dtype).itemsize


def read_bucket_part(store: Store, plan: IndexPlan, unit: int, bucket: int, counts: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(global token, latent, stored value) of one unit's entries in one bucket."""
    n, size = counts[bucket], _entry_bytes(plan)
    start = sum(counts[:bucket]) * size
    raw = store.files.read_range(staging_key(plan, unit), start, start + n * size) if n else b""
    token = np.frombuffer(raw, np.uint32, n, 0).astype(np.int64)
    latent = np.frombuffer(raw, np.int32, n, 4 * n)
    value = np.frombuffer(raw, storage_dtype(plan.value_dtype), n, 8 * n)
    first_token = store.grid.contexts(unit).start * store.meta.ctx_len
    return token + first_token, latent, value


def descending_key(values: np.ndarray) -> np.ndarray:
    """uint32 keys whose ascending order is the values' descending order (any sign, float32-exact)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    ascending = np.where(bits >> 31 == 1, ~bits, bits | np.uint32(0x80000000))
    return ~ascending


def reduce_bucket(store: Store, plan: IndexPlan, bucket: int, counts: dict[int, list[int]]) -> int:
    """Sort one bucket's entries from every unit and write its CSR arrays; return its size.

    ``counts`` maps each unit of the plan to its per-bucket entry counts (the map manifests).
    """
    parts = [read_bucket_part(store, plan, u, bucket, counts[u]) for u in plan.units]
    token = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
    latent = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int32)
    stored = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, storage_dtype(plan.value_dtype))
    del parts
    lats = plan.latents(bucket)
    local = (latent - lats.start).astype(np.uint64)
    values = stored.view(numpy_dtype(plan.value_dtype)).astype(np.float32)
    # Entries arrive in token order (units ascending, tokens ascending within a unit), and the
    # sort is stable: ties in (latent, value) stay in token order.
    order = np.argsort((local << np.uint64(32)) | descending_key(values).astype(np.uint64), kind="stable")
    offsets = np.zeros(len(lats) + 1, np.int64)
    np.cumsum(np.bincount(local.astype(np.int64), minlength=len(lats)), out=offsets[1:])
    _write_bucket(store, plan, bucket, offsets, token[order], stored[order])
    write_bucket_profile(store, plan, bucket, counts, latent, values)
    store.manifests.commit(index_stage(plan.sae), bucket, {"build": plan.build_id, "nnz": int(token.size)})
    return int(token.size)


def _write_bucket(store: Store, plan: IndexPlan, bucket: int, offsets: np.ndarray, token: np.ndarray, value: np.ndarray) -> None:
    """Whole arrays in one go; sharded into one object each once larger than a chunk."""
    for name, data, logical in (("offsets", offsets, "int64"), ("token", token, "int64"), ("value", value, plan.value_dtype)):
        n = max(int(data.size), 1)
        chunk = n if name == "offsets" else min(n, CHUNK)
        shard = math.ceil(n / chunk) * chunk
        arr = zarr.create_array(store=store.group.store, name=bucket_array(plan.sae, bucket, name), shape=data.shape,
                                chunks=(chunk,), shards=None if shard == chunk else (shard,), dtype=data.dtype,
                                fill_value=0, attributes={"logical_dtype": logical, "per_token": False}, overwrite=True)
        arr[...] = data
