"""Token profiles: the tokens and preceding-token bigrams each latent fires on, exactly.

Built with the index, in proportion to its postings. The map step stages, beside each unit's
entries and in the same bucket order, every entry's token id and preceding token id (one more
staging object, 8 bytes an entry). The reduce step counts a bucket's entries by (latent, token)
and by (latent, preceding token, token), keeps each latent's ``top`` of both by count and writes
them into the profile arrays: the rows of the bucket's latents, which are one chunk per array,
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

__all__ = ["PROFILE_ARRAYS", "PROFILE_TOP", "ProfileCounts", "corpus_counts", "create_profile_arrays", "kept_keys",
           "profile_group", "read_profile", "stage_profile", "write_bucket_profile", "write_corpus_counts"]

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


def _bucket_ids(store: Store, plan: IndexPlan, bucket: int, counts: dict[int, list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Token and preceding ids of a bucket's entries from every unit, in the order the index's
    reduce concatenates them (units ascending)."""
    toks, prevs = [], []
    for unit in plan.units:
        n, start = counts[unit][bucket], 8 * sum(counts[unit][:bucket])
        raw = store.files.read_range(_profile_staging(plan, unit), start, start + 8 * n) if n else b""
        toks.append(np.frombuffer(raw, np.int32, n, 0))
        prevs.append(np.frombuffer(raw, np.int32, n, 4 * n))
    return np.concatenate([*toks, np.zeros(0, np.int32)]), np.concatenate([*prevs, np.zeros(0, np.int32)])


class _Top(NamedTuple):
    """Per latent row (``[n_latents, top]``): its most frequent keys, their counts and masses."""

    keys: list[np.ndarray]
    counts: np.ndarray
    masses: np.ndarray


def _top_per_latent(local: np.ndarray, keys: list[np.ndarray], values: np.ndarray, n_latents: int, top: int) -> _Top:
    """Group entries by (latent, keys...), then keep each latent's ``top`` groups by count
    (ties: mass, then the keys ascending)."""
    out = _Top([np.full((n_latents, top), -1, np.int32) for _ in keys], np.zeros((n_latents, top), np.int64),
               np.zeros((n_latents, top), np.float64))
    if local.size == 0:
        return out
    order = np.lexsort((*reversed(keys), local))
    cols = [local[order], *(k[order] for k in keys)]
    starts = np.flatnonzero(np.r_[True, np.any([np.diff(c) != 0 for c in cols], axis=0)])
    g_latent, g_keys = cols[0][starts], [c[starts] for c in cols[1:]]
    g_count = np.diff(np.r_[starts, local.size])
    g_mass = np.add.reduceat(values[order].astype(np.float64), starts)
    ranked = np.lexsort((*reversed(g_keys), -g_mass, -g_count, g_latent))
    lat = g_latent[ranked]
    rank = np.arange(lat.size) - np.searchsorted(lat, lat, side="left")
    keep = ranked[rank < top]
    row, col = g_latent[keep], rank[rank < top]
    for dst, src in zip(out.keys, g_keys, strict=True):
        dst[row, col] = src[keep]
    out.counts[row, col], out.masses[row, col] = g_count[keep], g_mass[keep]
    return out


def write_bucket_profile(store: Store, plan: IndexPlan, bucket: int, counts: dict[int, list[int]],
                         latent: np.ndarray, values: np.ndarray) -> None:
    """Count one bucket's entries (``latent``, ``values``: in the reduce's concatenation order)
    by token and by bigram and write its latents' rows of the profile arrays."""
    if not plan.profile_top:
        return
    tok, prev = _bucket_ids(store, plan, bucket, counts)
    lats = plan.latents(bucket)
    local = (np.asarray(latent, np.int64) - lats.start)
    values = np.asarray(values, np.float64)
    tokens = _top_per_latent(local, [tok], values, len(lats), plan.profile_top)
    has = prev >= 0
    bigrams = _top_per_latent(local[has], [prev[has], tok[has]], values[has], len(lats), plan.profile_top)
    rows = {
        "count": np.bincount(local, minlength=len(lats)), "mass": np.bincount(local, weights=values, minlength=len(lats)),
        "token_id": tokens.keys[0], "token_count": tokens.counts, "token_mass": tokens.masses,
        "bigram_prev": bigrams.keys[0], "bigram_id": bigrams.keys[1], "bigram_count": bigrams.counts,
        "bigram_mass": bigrams.masses,
    }
    for name, data in rows.items():
        store.array(f"{profile_group(plan.sae)}/{name}")[lats.start : lats.stop] = data


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
