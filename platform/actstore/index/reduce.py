"""The reduce step of the index build: rank one bucket's entries and write its arrays in blocks,
in memory bounded by ``limit`` entries whatever the corpus size.

A bucket of up to ``limit`` entries is read whole, ranked by (latent, value descending, token)
and laid out in blocks (``index/postings.py``); its token profiles are counted as it is read
(``index/profile.py``). A larger bucket (a latent firing on a large share of a large corpus
lands in one bucket whole) is reduced in slices: a first pass counts each latent's entries and,
for the dense latents, their entries by the top 16 bits of the rank key (the value's sign,
exponent and 7 bits of mantissa, in rank order), and spills the token profile records by a hash
of (latent, token id) into ``total / limit`` partitions (``b<bucket>-<group>.profile.bin``), which
are then counted one at a time; slices are then cut between the rank-key groups, each of at most
``limit`` entries (a group larger than that, one value of one latent, stays whole); a second
pass spills every entry to its slice, group of units by group of units
(``_staging/index/<sae>/<build>/b<bucket>-<group>.bin``); each slice is then ranked in memory
and written in turn, the entries of a block that continues into the next slice carried over.
The arrays are written shard by shard (:data:`SHARD` entries), so the writer holds one.
"""

from __future__ import annotations

import math

import numpy as np
import zarr

from actstore.index.build import ARRAYS, CHUNK, read_bucket_part, staging_dtypes
from actstore.index.layout import IndexPlan, bucket_array, index_stage, spill_key
from actstore.index.postings import block_layout, descending_key
from actstore.index.profile import BucketProfile, profile_ids
from actstore.store.dtypes import numpy_dtype, storage_dtype
from actstore.store.layout import compressors
from actstore.store.stats import current_totals
from actstore.store.store import Store

__all__ = ["SHARD", "reduce_bucket"]

SHARD = 2**23  # entries per shard object of a bucket's token_gap and value arrays (a multiple of CHUNK)
PREFIX_BITS = 16  # a dense latent's entries are sliced by this many leading bits of their rank key
Entries = tuple[np.ndarray, np.ndarray, np.ndarray]  # (global token int64, bucket-local latent, stored value)


def reduce_bucket(store: Store, plan: IndexPlan, bucket: int, spans: np.ndarray, *, limit: int) -> int:
    """Rank one bucket's entries from every unit and write its arrays in blocks; return its size.

    ``spans`` [units, 2]: for each unit of the plan (in order), the bucket's first entry in the
    unit's staged object and its count (from the map manifests): the task gets its bucket's
    column only. ``limit``: entries ranked in memory at once (``bucket_nnz``).
    """
    assert plan.block is not None, "new indexes are written in blocks (run_index starts a new build for an older plan)"
    n_lat, total = len(plan.latents(bucket)), int(spans[:, 1].sum())
    writer, profile = _Writer(store, plan, bucket, total), BucketProfile(plan, bucket)
    if total <= limit:
        everything = range(len(plan.units))
        token, local, stored = _read(store, plan, spans, everything)
        profile.add(local, stored.view(numpy_dtype(plan.value_dtype)), *profile_ids(store, plan, spans, everything))
        offsets = _offsets(np.bincount(local, minlength=n_lat))
        _emit(writer, plan, offsets, 0, _ranked(plan, (token, local, stored)), final=True)
    else:
        offsets = _reduce_in_slices(store, plan, bucket, spans, limit, writer, profile)
    writer.close()
    _create(store, plan, bucket, "offsets", offsets.size, offsets.dtype)[...] = offsets
    profile.write(store)
    store.manifests.commit(index_stage(plan.sae), bucket, {"build": plan.build_id, "nnz": total})
    return total


def _read(store: Store, plan: IndexPlan, spans: np.ndarray, units: range | list[int]) -> Entries:
    """The bucket's entries staged by some of the plan's units (positions in ``plan.units``), in token order."""
    parts = [read_bucket_part(store, plan, plan.units[i], int(spans[i, 0]), int(spans[i, 1])) for i in units]
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, staging_dtypes(store, plan)[1]), np.zeros(0, storage_dtype(plan.value_dtype))
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]))


def _offsets(counts: np.ndarray) -> np.ndarray:
    offsets = np.zeros(counts.size + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets


def _ranked(plan: IndexPlan, entries: Entries) -> Entries:
    """Entries in token order, ranked by (latent, value descending); the sort is stable, so ties
    stay in token order."""
    token, local, stored = entries
    key = local.astype(np.uint64) << np.uint64(32)
    key |= descending_key(stored.view(numpy_dtype(plan.value_dtype)))
    order = np.argsort(key, kind="stable")
    del key
    return token[order], local[order], stored[order]


def _emit(writer: _Writer, plan: IndexPlan, offsets: np.ndarray, start: int, ranked: Entries, *, final: bool) -> Entries:
    """Lay out and write ranked entries whose first has bucket position ``start``; return those of
    a block that continues past them (unless ``final``), to be written with the next slice."""
    token, local, stored = ranked
    block = plan.block or 1
    cut = token.size
    if not final and token.size:
        last = int(local[-1])
        end = start + token.size
        if end < offsets[last + 1]:  # the last latent goes on: its unfinished block waits
            cut = max(offsets[last] + (end - offsets[last]) // block * block - start, 0)
    order, gaps = block_layout(local[:cut].astype(np.int64), token[:cut], offsets, block, writer.n_tokens, start=start)
    writer.append(gaps, stored[:cut][order])
    return token[cut:], local[cut:], stored[cut:]


def _reduce_in_slices(store: Store, plan: IndexPlan, bucket: int, spans: np.ndarray, limit: int, writer: _Writer,
                      profile: BucketProfile) -> np.ndarray:
    """Reduce a bucket larger than ``limit`` in slices (module docstring), counting its token
    profiles in the first pass; returns its offsets."""
    groups = _unit_groups(spans[:, 1], limit)
    lats = plan.latents(bucket)
    fired = current_totals(store, "saes", plan.sae, ("fired",), store.sae_stage(plan.sae))["fired"][lats.start : lats.stop]
    dense = np.flatnonzero(fired > limit // 8)  # an upper bound of each latent's entries
    rank_of = np.full(len(lats), -1, np.int64)
    rank_of[dense] = np.arange(dense.size)
    counts, hist = np.zeros(len(lats), np.int64), np.zeros(dense.size << PREFIX_BITS, np.int64)
    n_parts, by_part = math.ceil(int(spans[:, 1].sum()) / limit), []
    for g, group in enumerate(groups):  # pass 1: counts, the dense latents' counts by key prefix, profile records
        _, local, stored = _read(store, plan, spans, group)
        if plan.profile_top:
            by_part.append(_spill_profile(store, plan, bucket, g, local, stored, profile_ids(store, plan, spans, group), n_parts))
        counts += np.bincount(local, minlength=len(lats))
        rank = rank_of[local]
        mine = rank >= 0
        hist += np.bincount((rank[mine] << PREFIX_BITS) + _prefix(plan, stored[mine]), minlength=hist.size)
    _profile_by_partition(store, plan, bucket, by_part, profile)
    bounds = _slice_bounds(counts, dense, hist.reshape(dense.size, 1 << PREFIX_BITS), limit)
    per_group = [_spill(store, plan, bucket, g, _read(store, plan, spans, group), bounds, rank_of)
                 for g, group in enumerate(groups)]  # pass 2
    offsets, carry, start = _offsets(counts), _read(store, plan, spans, []), 0
    for s in range(len(bounds)):  # each slice, in rank order, after the carried entries that rank before it
        ranked = _concat([carry, _ranked(plan, _concat([_unspill(store, plan, bucket, g, c, s) for g, c in enumerate(per_group)]))])
        carry = _emit(writer, plan, offsets, start, ranked, final=s == len(bounds) - 1)
        start += ranked[0].size - carry[0].size
    for g in range(len(groups)):  # the disk they took is the build's until it ends otherwise
        for kind in ("", ".profile"):
            store.files.remove(spill_key(plan, bucket, g, kind))
    return offsets


def _concat(parts: list[Entries]) -> Entries:
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])


def _unit_groups(sizes: np.ndarray, limit: int) -> list[list[int]]:
    """Consecutive units (positions) whose entries add up to at most ``limit`` (a larger unit alone)."""
    groups: list[list[int]] = [[]]
    total = 0
    for i, n in enumerate(sizes.tolist()):
        if groups[-1] and total + n > limit:
            groups.append([])
            total = 0
        groups[-1].append(i)
        total += n
    return groups


def _prefix(plan: IndexPlan, stored: np.ndarray) -> np.ndarray:
    """The leading bits of each value's descending key (ascending = value descending, coarsely)."""
    return (descending_key(stored.view(numpy_dtype(plan.value_dtype))) >> np.uint32(32 - PREFIX_BITS)).astype(np.int64)


def _route(plan: IndexPlan, local: np.ndarray, stored: np.ndarray, rank_of: np.ndarray) -> np.ndarray:
    """Each entry's routing key, ascending in rank order: latent, then (dense latents only) the
    leading bits of its descending-value key."""
    return (local.astype(np.int64) << PREFIX_BITS) + np.where(rank_of[local] >= 0, _prefix(plan, stored), 0)


def _slice_bounds(counts: np.ndarray, dense: np.ndarray, hist: np.ndarray, limit: int) -> np.ndarray:
    """Routing keys where slices start: groups (a latent, or a dense latent's entries sharing a
    key prefix) in rank order, packed greedily into slices of at most ``limit`` entries."""
    keys, sizes = [], []
    for latent in np.flatnonzero(counts).tolist():
        where = np.searchsorted(dense, latent)
        if where < dense.size and dense[where] == latent:
            prefixes = np.flatnonzero(hist[where])
            keys.append((latent << PREFIX_BITS) + prefixes)
            sizes.append(hist[where][prefixes])
        else:
            keys.append(np.array([latent << PREFIX_BITS]))
            sizes.append(counts[latent : latent + 1])
    bounds, filled = [0], 0
    for key, size in zip(np.concatenate(keys).tolist(), np.concatenate(sizes).tolist(), strict=True):
        if filled and filled + size > limit:
            bounds.append(key)
            filled = 0
        filled += size
    return np.asarray(bounds, np.int64)


def _spill(store: Store, plan: IndexPlan, bucket: int, group: int, entries: Entries, bounds: np.ndarray,
           rank_of: np.ndarray) -> list[int]:
    """Write a group of units' entries grouped by slice (token order kept within each); return the counts per slice."""
    token, local, stored = entries
    where = np.searchsorted(bounds, _route(plan, local, stored, rank_of), side="right") - 1
    return _write_runs(store, spill_key(plan, bucket, group), where, bounds.size, [token, local, stored])


def _unspill(store: Store, plan: IndexPlan, bucket: int, group: int, counts: list[int], s: int) -> Entries:
    """Slice ``s``'s entries from a group's spill object (one range read)."""
    types = [np.dtype(np.int64), staging_dtypes(store, plan)[1], storage_dtype(plan.value_dtype)]
    token, local, stored = _read_run(store, spill_key(plan, bucket, group), counts, s, types)
    return token, local, stored


def _write_runs(store: Store, key: str, where: np.ndarray, n: int, arrays: list[np.ndarray]) -> list[int]:
    """One object holding the arrays' entries grouped by ``where`` (``[0, n)``; order kept within
    a group): per group, each array's run in turn. Returns the entries per group."""
    order = np.argsort(where, kind="stable")
    counts = np.bincount(where, minlength=n)
    arrays = [a[order] for a in arrays]
    parts, at = [], 0
    for c in counts.tolist():
        parts += [a[at : at + c].tobytes() for a in arrays]
        at += c
    store.files.write_bytes(key, b"".join(parts))
    return [int(c) for c in counts]


def _read_run(store: Store, key: str, counts: list[int], s: int, types: list[np.dtype]) -> list[np.ndarray]:
    """Group ``s`` of an object :func:`_write_runs` wrote (one range read)."""
    size, n = sum(t.itemsize for t in types), counts[s]
    first = sum(counts[:s]) * size
    raw = store.files.read_range(key, first, first + n * size) if n else b""
    out, at = [], 0
    for t in types:
        out.append(np.frombuffer(raw, t, n, at))
        at += t.itemsize * n
    return out


def _spill_profile(store: Store, plan: IndexPlan, bucket: int, group: int, local: np.ndarray, stored: np.ndarray,
                   ids: tuple[np.ndarray, np.ndarray], n_parts: int) -> list[int]:
    """Write a group of units' token profile records (latent, token id, preceding id, value)
    grouped by a hash of (latent, token id): every record of a (latent, token) pair, and so of
    each of its bigrams, lands in one partition. Returns the counts per partition."""
    tok, prev = ids
    where = (local.astype(np.int64) * 0x9E3779B1 + tok) % n_parts
    return _write_runs(store, spill_key(plan, bucket, group, ".profile"), where, n_parts, [local, tok, prev, stored])


def _profile_by_partition(store: Store, plan: IndexPlan, bucket: int, per_group: list[list[int]],
                          profile: BucketProfile) -> None:
    """Count each hash partition's records exactly and keep its latents' top tokens and bigrams:
    a partition's keys are in no other, so the top of the tops is exact."""
    types = [staging_dtypes(store, plan)[1], np.dtype(np.int32), np.dtype(np.int32), storage_dtype(plan.value_dtype)]
    for p in range(len(per_group[0]) if per_group else 0):
        part = BucketProfile(plan, bucket)
        for g, counts in enumerate(per_group):
            local, tok, prev, stored = _read_run(store, spill_key(plan, bucket, g, ".profile"), counts, p, types)
            part.add(local, stored.view(numpy_dtype(plan.value_dtype)), tok, prev)
        profile.absorb(part)


def _create(store: Store, plan: IndexPlan, bucket: int, name: str, size: int, dtype: np.dtype) -> zarr.Array:
    """A bucket array: offsets in one chunk; tokens and values in chunks of :data:`CHUNK`, in
    shards of :data:`SHARD` once larger than a chunk."""
    n = max(size, 1)
    chunk = n if name == "offsets" else min(n, CHUNK)
    shard = chunk if name == "offsets" else min(math.ceil(n / chunk) * chunk, SHARD)
    return zarr.create_array(store=store.group.store, name=bucket_array(plan.sae, bucket, name), shape=(size,),
                             chunks=(chunk,), shards=None if shard == chunk else (shard,), dtype=dtype, fill_value=0,
                             compressors=compressors(ARRAYS[name], dtype.itemsize),
                             attributes={"logical_dtype": plan.value_dtype if name == "value" else "int64", "per_token": False},
                             overwrite=True)  # a retried task replaces what an earlier attempt wrote


class _Writer:
    """Appends laid-out entries to a bucket's token_gap and value arrays, whole shards at a time."""

    def __init__(self, store: Store, plan: IndexPlan, bucket: int, total: int) -> None:
        value_type = storage_dtype(plan.value_dtype)
        self.gaps = _create(store, plan, bucket, "token_gap", total, np.dtype(np.int64))
        self.values = _create(store, plan, bucket, "value", total, value_type)
        self.shard = self.gaps.shards[0] if self.gaps.shards else max(total, 1)
        self.total, self.written = total, 0
        self.n_tokens = store.meta.n_ctx * store.meta.ctx_len
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []

    def append(self, gaps: np.ndarray, values: np.ndarray) -> None:
        self.pending.append((gaps, values))
        while sum(p[0].size for p in self.pending) >= self.shard:
            self._flush(self.shard)

    def close(self) -> None:
        self._flush(sum(p[0].size for p in self.pending))
        assert self.written == self.total, (self.written, self.total)

    def _flush(self, n: int) -> None:
        if n == 0:
            return
        gaps, values = (np.concatenate([p[i] for p in self.pending]) for i in range(2))
        self.gaps[self.written : self.written + n] = gaps[:n]
        self.values[self.written : self.written + n] = values[:n]
        self.written += n
        self.pending = [(gaps[n:], values[n:])] if gaps.size > n else []
