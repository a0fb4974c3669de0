"""Token profiles: the tokens and preceding-token bigrams each latent fires on, exactly.

Built with the index, in proportion to its postings. The map step stages, beside each unit's
entries and in the same bucket order, every entry's token id and preceding token id (one more
staging object, 8 bytes an entry). The reduce step counts a bucket's entries by (latent, token)
and by (latent, preceding token, token) (a bucket it reduces in slices: one hash partition of
its (latent, token) pairs at a time, :class:`BucketProfile`), keeps each latent's ``top`` of both
by count and writes them into the profile arrays: the rows of the bucket's latents, which are one chunk per array,
so each bucket owns its objects. Precision needs how often a kept token or bigram occurs among
the indexed tokens: after the reduces one pass over the units' token ids and flags (5 bytes a
token slot, next to the map's ``code_cap`` x 6-8 bytes) counts just the kept ones, and the
driver writes the ``*_corpus`` arrays.

A token's preceding token is the one before it in its context, unless that is a token the
index leaves out (BOS, padding): then it has none (-1). Firings and corpus counts use the same
rule, so precision is exact. Layout: ``schemas/STORE.md`` ("Token profiles").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from actstore.index.layout import IndexPlan, index_group, staging_key
from actstore.store.layout import token_array

if TYPE_CHECKING:
    from actstore.store.store import Store

__all__ = ["PROFILE_ARRAYS", "PROFILE_TOP", "BucketProfile", "ProfileCounts", "corpus_counts", "create_profile_arrays",
           "kept_keys", "profile_group", "profile_ids", "read_profile", "stage_profile", "write_corpus_counts"]

PROFILE_TOP = 16  # tokens and bigrams kept per latent
# name -> (dtype, fill, per latent row [d_sae] or [d_sae, top])
PROFILE_ARRAYS: dict[str, tuple[str, int, bool]] = {
    "count": ("int64", 0, False), "mass": ("float64", 0, False),
    "token_id": ("int32", -1, True), "token_count": ("int64", 0, True), "token_mass": ("float64", 0, True),
    "token_corpus": ("int64", 0, True),
    "bigram_prev": ("int32", -1, True), "bigram_id": ("int32", -1, True), "bigram_count": ("int64", 0, True),
    "bigram_mass": ("float64", 0, True), "bigram_corpus": ("int64", 0, True),
}


def profile_group(sae: str) -> str:
    return f"{index_group(sae)}/profile"


def _profile_staging(plan: IndexPlan, unit: int) -> str:
    return staging_key(plan, unit).removesuffix(".bin") + ".profile.bin"


def create_profile_arrays(store: Store, plan: IndexPlan) -> None:
    """The empty profile arrays of a new build (the driver, before any reduce): chunks of one
    bucket's latents, so a reduce task writes exactly its own chunk of each."""
    import zarr

    group = store.group.require_group(profile_group(plan.sae))
    rows = plan.latents_per_bucket
    for name, (dtype, fill, wide) in PROFILE_ARRAYS.items():
        shape, chunks = ((plan.d_sae, plan.profile_top), (rows, plan.profile_top)) if wide else ((plan.d_sae,), (rows,))
        zarr.create_array(store=group.store, name=f"{group.path}/{name}", shape=shape, chunks=chunks, dtype=dtype,
                          fill_value=fill, attributes={"logical_dtype": dtype, "per_token": False}, overwrite=True)


def stage_profile(store: Store, plan: IndexPlan, unit: int, flags: np.ndarray, token: np.ndarray,
                  counts: list[int]) -> None:
    """Stage the token id and preceding token id of a unit's entries. ``token``: each staged
    entry's unit-local token index, in staging order (bucket after bucket, ``counts`` each);
    ``flags``: the unit's token flags, flat. Per bucket: the ids as int32, then the preceding ids."""
    if not plan.profile_top:
        return
    contexts = store.grid.contexts(unit)
    ids = np.asarray(store.array(token_array("ids"))[contexts.start : contexts.stop]).reshape(-1)
    tok, prev = _with_previous(ids, flags, token.astype(np.int64), store.meta.ctx_len, plan.exclude_flags)
    parts, start = [], 0
    for n in counts:
        parts += [tok[start : start + n].tobytes(), prev[start : start + n].tobytes()]
        start += n
    store.files.write_bytes(_profile_staging(plan, unit), b"".join(parts))


def _with_previous(ids: np.ndarray, flags: np.ndarray, at: np.ndarray, ctx_len: int,
                   exclude: int) -> tuple[np.ndarray, np.ndarray]:
    """(token id, preceding token id or -1) at flat indices ``at`` of contexts laid end to end."""
    before = np.maximum(at - 1, 0)
    has = (at % ctx_len > 0) & ((flags[before] & exclude) == 0)
    return ids[at].astype(np.int32), np.where(has, ids[before], -1).astype(np.int32)


def profile_ids(store: Store, plan: IndexPlan, spans: np.ndarray, units: range | list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Token and preceding ids of a bucket's entries staged by some of the plan's units
    (positions in ``plan.units``; ``spans`` as the index's reduce gets them: each unit's first
    entry of the bucket and its count), in the order the reduce reads the entries."""
    toks, prevs = [np.zeros(0, np.int32)], [np.zeros(0, np.int32)]
    for i in units:
        start, n = int(spans[i, 0]), int(spans[i, 1])
        raw = store.files.read_range(_profile_staging(plan, plan.units[i]), 8 * start, 8 * (start + n)) if n else b""
        toks.append(np.frombuffer(raw, np.int32, n, 0))
        prevs.append(np.frombuffer(raw, np.int32, n, 4 * n))
    return np.concatenate(toks), np.concatenate(prevs)


class _Groups(NamedTuple):
    """Entries grouped by (latent, keys...): one row per group, sorted, with its count and mass."""

    latent: np.ndarray
    keys: list[np.ndarray]
    counts: np.ndarray
    masses: np.ndarray


def _group(latent: np.ndarray, keys: list[np.ndarray], count: np.ndarray, mass: np.ndarray) -> _Groups:
    """Rows (entries, or groups to merge) summed by (latent, keys...), sorted by them. The columns
    (non-negative) are packed into one int64 where their bits fit, so one sort groups them."""
    if latent.size == 0:
        return _Groups(latent, keys, count, mass)
    cols = [np.asarray(latent, np.int64), *(np.asarray(k, np.int64) for k in keys)]
    bits = [max(int(c.max()).bit_length(), 1) for c in cols]
    if sum(bits) > 62 or min(int(c.min()) for c in cols) < 0:
        order = np.lexsort(cols[::-1])
        cols = [c[order] for c in cols]
        starts = np.flatnonzero(np.r_[True, np.any([np.diff(c) != 0 for c in cols], axis=0)])
        return _Groups(cols[0][starts], [c[starts].astype(np.int32) for c in cols[1:]],
                       np.add.reduceat(count[order], starts), np.add.reduceat(mass[order], starts))
    packed = cols[0].copy()
    for col, width in zip(cols[1:], bits[1:], strict=True):
        packed <<= width
        packed |= col
    order = np.argsort(packed)
    packed = packed[order]
    starts = np.flatnonzero(np.r_[True, packed[1:] != packed[:-1]])
    unique, counts, masses = packed[starts], np.add.reduceat(count[order], starts), np.add.reduceat(mass[order], starts)
    out = []
    for width in bits[:0:-1]:
        out.append((unique & ((1 << width) - 1)).astype(np.int32))
        unique >>= width
    return _Groups(unique, out[::-1], counts, masses)


def _merged(a: _Groups, b: _Groups) -> _Groups:
    return _group(np.concatenate([a.latent, b.latent]), [np.concatenate(p) for p in zip(a.keys, b.keys, strict=True)],
                  np.concatenate([a.counts, b.counts]), np.concatenate([a.masses, b.masses]))


class _Top(NamedTuple):
    """Per latent row (``[n_latents, top]``): its most frequent keys, their counts and masses."""

    keys: list[np.ndarray]
    counts: np.ndarray
    masses: np.ndarray


def _ranked_top(groups: _Groups, top: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of each latent's ``top`` groups by count (ties: mass, then the keys ascending), and
    their ranks within the latent. The groups are sorted by (latent, keys) and the sort is stable,
    so ties in count and mass stay by keys."""
    by_count = (groups.latent << 40) | (2**40 - 1 - np.minimum(groups.counts, 2**40 - 1))
    ranked = np.lexsort((-groups.masses, by_count))
    lat = groups.latent[ranked]
    rank = np.arange(lat.size) - np.searchsorted(lat, lat, side="left")
    return ranked[rank < top], rank[rank < top]


def _trimmed(groups: _Groups, top: int) -> _Groups:
    """Only each latent's ``top`` groups (exact once every entry of those keys is counted)."""
    keep = np.sort(_ranked_top(groups, top)[0])
    return _Groups(groups.latent[keep], [k[keep] for k in groups.keys], groups.counts[keep], groups.masses[keep])


def _top_per_latent(groups: _Groups, n_latents: int, top: int) -> _Top:
    """Each latent's ``top`` groups as rows."""
    out = _Top([np.full((n_latents, top), -1, np.int32) for _ in groups.keys], np.zeros((n_latents, top), np.int64),
               np.zeros((n_latents, top), np.float64))
    if groups.latent.size == 0:
        return out
    keep, col = _ranked_top(groups, top)
    row = groups.latent[keep]
    for dst, src in zip(out.keys, groups.keys, strict=True):
        dst[row, col] = src[keep]
    out.counts[row, col], out.masses[row, col] = groups.counts[keep], groups.masses[keep]
    return out


class BucketProfile:
    """One bucket's token profiles, counted from its entries and written once. The memory held
    is the distinct (latent, token) and (latent, bigram) pairs added; a bucket too large for that
    is counted one hash partition of its (latent, token) pairs at a time, each partition's top
    kept (:meth:`absorb`)."""

    def __init__(self, plan: IndexPlan, bucket: int) -> None:
        self.plan, self.lats = plan, plan.latents(bucket)
        n = len(self.lats)
        self.count, self.mass = np.zeros(n, np.int64), np.zeros(n, np.float64)
        empty = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)
        self.tokens = _Groups(empty[0], [np.zeros(0, np.int32)], empty[1], empty[2])
        self.bigrams = _Groups(empty[0], [np.zeros(0, np.int32), np.zeros(0, np.int32)], empty[1], empty[2])

    def add(self, local: np.ndarray, values: np.ndarray, tok: np.ndarray, prev: np.ndarray) -> None:
        """Count entries: bucket-local latents, values (any float dtype), token and preceding ids."""
        if not self.plan.profile_top:
            return
        local, values = np.asarray(local, np.int64), np.asarray(values, np.float64)
        self.count += np.bincount(local, minlength=self.count.size)
        self.mass += np.bincount(local, weights=values, minlength=self.mass.size)
        ones = np.ones(local.size, np.int64)
        self.tokens = _merged(self.tokens, _group(local, [tok], ones, values))
        has = prev >= 0
        self.bigrams = _merged(self.bigrams, _group(local[has], [prev[has], tok[has]], ones[has], values[has]))

    def absorb(self, other: BucketProfile) -> None:
        """Add a profile counted over other keys (a hash partition of (latent, token) pairs: none
        of its tokens or bigrams is counted here), keeping only each latent's top of both."""
        top = self.plan.profile_top
        self.count += other.count
        self.mass += other.mass
        self.tokens = _trimmed(_merged(self.tokens, _trimmed(other.tokens, top)), top)
        self.bigrams = _trimmed(_merged(self.bigrams, _trimmed(other.bigrams, top)), top)

    def write(self, store: Store) -> None:
        """Write the bucket's latents' rows of the profile arrays."""
        if not self.plan.profile_top:
            return
        tokens = _top_per_latent(self.tokens, len(self.lats), self.plan.profile_top)
        bigrams = _top_per_latent(self.bigrams, len(self.lats), self.plan.profile_top)
        rows = {
            "count": self.count, "mass": self.mass,
            "token_id": tokens.keys[0], "token_count": tokens.counts, "token_mass": tokens.masses,
            "bigram_prev": bigrams.keys[0], "bigram_id": bigrams.keys[1], "bigram_count": bigrams.counts,
            "bigram_mass": bigrams.masses,
        }
        for name, data in rows.items():
            store.array(f"{profile_group(self.plan.sae)}/{name}")[self.lats.start : self.lats.stop] = data


def _bigram_key(prev: np.ndarray, tok: np.ndarray) -> np.ndarray:
    return (prev.astype(np.int64) << 32) | tok.astype(np.int64)


def kept_keys(store: Store, plan: IndexPlan) -> tuple[np.ndarray, np.ndarray]:
    """The distinct token ids and bigram keys (``prev << 32 | id``) kept in any latent's profile."""
    arrays = {n: np.asarray(store.array(f"{profile_group(plan.sae)}/{n}")[...]) for n in ("token_id", "bigram_prev", "bigram_id")}
    tokens = np.unique(arrays["token_id"][arrays["token_id"] >= 0]).astype(np.int64)
    has = arrays["bigram_id"] >= 0
    return tokens, np.unique(_bigram_key(arrays["bigram_prev"][has], arrays["bigram_id"][has]))


class ProfileCounts(NamedTuple):
    """Occurrences among the indexed tokens of each kept token id and bigram key (same order)."""

    tokens: np.ndarray
    bigrams: np.ndarray


def _count_in(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    if sorted_keys.size == 0:
        return np.zeros(0, np.int64)
    at = np.minimum(np.searchsorted(sorted_keys, keys), sorted_keys.size - 1)
    return np.bincount(at[sorted_keys[at] == keys], minlength=sorted_keys.size).astype(np.int64)


def corpus_counts(store: Store, plan: IndexPlan, units: list[int], tokens: np.ndarray, bigrams: np.ndarray) -> ProfileCounts:
    """Occurrences of the kept ``tokens`` and ``bigrams`` among the indexed tokens of ``units``
    (flags outside ``plan.exclude_flags``), each unit's ids and flags read once."""
    out = ProfileCounts(np.zeros(tokens.size, np.int64), np.zeros(bigrams.size, np.int64))
    for unit in units:
        contexts = store.grid.contexts(unit)
        ids = np.asarray(store.array(token_array("ids"))[contexts.start : contexts.stop]).reshape(-1)
        flags = np.asarray(store.array(token_array("flags"))[contexts.start : contexts.stop]).reshape(-1)
        at = np.flatnonzero((flags & plan.exclude_flags) == 0)
        tok, prev = _with_previous(ids, flags, at, store.meta.ctx_len, plan.exclude_flags)
        out.tokens[:] += _count_in(tokens, tok.astype(np.int64))
        out.bigrams[:] += _count_in(bigrams, _bigram_key(prev[prev >= 0], tok[prev >= 0]))
    return out


def write_corpus_counts(store: Store, plan: IndexPlan, tokens: np.ndarray, bigrams: np.ndarray, counts: ProfileCounts) -> None:
    """Fill ``token_corpus`` and ``bigram_corpus`` from the counts of the kept keys (the driver,
    after every reduce), a bucket's rows at a time."""
    group = profile_group(plan.sae)
    for bucket in range(plan.n_buckets):
        rows = plan.latents(bucket)
        part = slice(rows.start, rows.stop)
        ids = np.asarray(store.array(f"{group}/token_id")[part])
        prev, bid = (np.asarray(store.array(f"{group}/{n}")[part]) for n in ("bigram_prev", "bigram_id"))
        store.array(f"{group}/token_corpus")[part] = _lookup(tokens, counts.tokens, ids.astype(np.int64), ids >= 0)
        store.array(f"{group}/bigram_corpus")[part] = _lookup(bigrams, counts.bigrams, _bigram_key(prev, bid), bid >= 0)


def _lookup(sorted_keys: np.ndarray, values: np.ndarray, keys: np.ndarray, valid: np.ndarray) -> np.ndarray:
    if sorted_keys.size == 0:
        return np.zeros(keys.shape, np.int64)
    at = np.minimum(np.searchsorted(sorted_keys, keys), sorted_keys.size - 1)
    return np.where(valid & (sorted_keys[at] == keys), values[at], 0).astype(np.int64)


def read_profile(store: Store, sae: str, rows: slice) -> dict[str, np.ndarray]:
    """The profile arrays' ``rows`` (latents), by name."""
    return {name: np.asarray(store.array(f"{profile_group(sae)}/{name}")[rows]) for name in PROFILE_ARRAYS}
