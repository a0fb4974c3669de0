"""A latent's postings: laying them out in blocks (the build) and reading a range of them back.

Within a latent, entries are ranked by value descending, ties by token ascending. Format 3
(``IndexPlan.block`` set) cuts that ranking into blocks of ``block`` entries and stores each
block's entries in token order, each token as the gap to the previous one of its block (the
first as the token itself): sorted gaps are small numbers that byte shuffle and zstd store in
about two bytes where an absolute token id takes three or four. A reader decodes the blocks
covering the ranks it wants (a prefix sum, one sort of at most ``block`` entries per block) and
keeps reading only what it needs: a top k reads one block. The older layout (``block`` None)
stores absolute tokens in rank order. ``schemas/STORE.md`` specifies both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from actstore.index.layout import IndexPlan, bucket_array
from actstore.store.dtypes import from_storage

if TYPE_CHECKING:
    from actstore.store.store import Store

__all__ = ["block_layout", "descending_key", "read_postings"]


def descending_key(values: np.ndarray) -> np.ndarray:
    """uint32 keys whose ascending order is the values' descending order (any sign, float32-exact)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    ascending = np.where(bits >> 31 == 1, ~bits, bits | np.uint32(0x80000000))
    return ~ascending


def block_layout(latent: np.ndarray, token: np.ndarray, offsets: np.ndarray, block: int, n_tokens: int,
                 *, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(order, gaps) that store entries in blocks: ``latent`` (bucket-local) and ``token`` are in
    rank order (each latent's entries together, by value descending), the first at position
    ``start`` of the bucket (a block's first entry); ``order`` reorders them by token within each
    block of ``block`` ranks, ``gaps`` are the reordered tokens as gaps."""
    n = token.size
    which = np.arange(start, start + n, dtype=np.int64)
    which -= offsets[latent]
    which //= block  # the entry's block within its latent
    first = np.ones(n, bool)  # the first entry of each block
    first[1:] = (latent[1:] != latent[:-1]) | (which[1:] != which[:-1])
    del which
    key = np.cumsum(first, dtype=np.int64)  # blocks numbered across the bucket, from 1
    if n and int(key[-1]) < 2**62 // max(n_tokens, 1):  # one integer sort when the key fits
        key *= n_tokens
        key += token
        order = np.argsort(key)  # keys are distinct: a token occurs once per latent
    else:
        order = np.lexsort((token, key))
    del key
    sorted_tokens = token[order]  # segments keep their places: ``first`` still marks each block's start
    gaps = np.diff(sorted_tokens, prepend=np.int64(0))
    gaps[first] = sorted_tokens[first]
    return order, gaps


def read_postings(store: Store, plan: IndexPlan, bucket: int, run: tuple[int, int], ranks: tuple[int, int],
                  min_value: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(flat token, value as float32) of the entries ranked ``ranks`` = [start, stop) of a latent
    whose entries are ``run`` = [lo, hi) of its bucket's arrays (positions, not ranks), value
    descending, ties by token; only those >= ``min_value`` when given."""
    lo, hi = run
    start, stop = lo + ranks[0], min(lo + ranks[1], hi)
    if stop <= start:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    value_arr = store.array(bucket_array(plan.sae, bucket, "value"))
    if plan.block is None:
        values = _values(value_arr, start, stop)
        if min_value is not None:  # values descend: the cut is a binary search
            values = values[: int(np.searchsorted(-values, -np.float32(min_value), side="right"))]
        tokens = np.asarray(store.array(bucket_array(plan.sae, bucket, "token"))[start : start + values.size])
        return tokens, values
    block = plan.block
    first = lo + (start - lo) // block * block  # the blocks covering [start, stop)
    last = min(lo + -(-(stop - lo) // block) * block, hi)
    values = _values(value_arr, first, last)
    which = (np.arange(first, last, dtype=np.int64) - lo) // block
    if min_value is not None:  # every block's values are >= the next block's: keep blocks up to the first going below
        below = np.flatnonzero(values < np.float32(min_value))
        if below.size:
            last = first + int(np.searchsorted(which, which[below[0]], side="right"))
            values, which = values[: last - first], which[: last - first]
    tokens = _block_tokens(np.asarray(store.array(bucket_array(plan.sae, bucket, "token_gap"))[first:last]), which)
    key = (which - which[0]).astype(np.uint64) << np.uint64(32)
    key |= descending_key(values)
    order = np.argsort(key, kind="stable")  # a block is stored by token: ties in value stay by token
    tokens, values = tokens[order][start - first : stop - first], values[order][start - first : stop - first]
    if min_value is not None:
        keep = int(np.searchsorted(-values, -np.float32(min_value), side="right"))
        tokens, values = tokens[:keep], values[:keep]
    return tokens, values


def _values(value_arr: object, start: int, stop: int) -> np.ndarray:
    raw = np.asarray(value_arr[start:stop])  # type: ignore[index]
    return from_storage(raw, str(value_arr.attrs.get("logical_dtype", raw.dtype))).astype(np.float32)  # type: ignore[attr-defined]


def _block_tokens(gaps: np.ndarray, which: np.ndarray) -> np.ndarray:
    """Tokens from gaps: a prefix sum restarted at each block (``which`` numbers the blocks, ascending)."""
    total = np.cumsum(gaps, dtype=np.int64)
    starts = np.flatnonzero(np.diff(which, prepend=which[0] - 1))
    base = np.zeros(starts.size, np.int64)
    base[1:] = total[starts[1:] - 1]
    return total - np.repeat(base, np.diff(np.append(starts, which.size)))
