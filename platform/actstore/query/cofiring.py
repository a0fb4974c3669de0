"""Which of a latent's occurrences co-firing reads: all of them, or a stated sample.

Co-firing is counted from the token-major codes at the latent's own tokens, so its cost is the
code chunks those tokens fall in: on a large store a dense latent touches every chunk. Given a
budget of code rows, a latent whose occurrences lie in more chunks than the budget holds is
counted on the occurrences inside a seeded sample of whole chunks (never the strongest ones
only: they are not representative), and the caller scales the counts by
``occurrences / len(tokens)``. Whole chunks are sampled because a chunk is the unit of reading
and decoding: a token read costs its chunk either way.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from actstore.store.codes import code_parts
from actstore.store.layout import code_array

__all__ = ["CofiringSample", "cofiring_sample"]


class CofiringSample(NamedTuple):
    """The occurrences co-firing counts on (flat token indices, ascending), out of how many."""

    tokens: np.ndarray
    occurrences: int  # all of the latent's occurrences (or its ``limit`` strongest)
    contexts: int  # contexts the counted occurrences lie in
    contexts_total: int  # contexts all its occurrences lie in

    @property
    def exact(self) -> bool:
        return int(self.tokens.size) == self.occurrences


def cofiring_sample(latents: Any, tokens: np.ndarray, *, max_rows: int | None, seed: int = 0) -> CofiringSample:
    """Which of a latent's occurrences ``tokens`` (flat token indices) to count co-firing on:
    all, or those in a seeded sample of whole code chunks holding at most ``max_rows`` token
    rows (``None``: no budget, all)."""
    tokens = np.sort(np.asarray(tokens, np.int64))
    ctx_len = latents.store.meta.ctx_len
    ctxs = np.unique(tokens // ctx_len)
    rows = int(latents.store.array(code_array(latents.name, code_parts(latents.store.meta.format_version)[0])).chunks[0])  # contexts per (inner) chunk
    chunks = np.unique(ctxs // rows)
    budget = None if max_rows is None else max(int(max_rows) // (rows * ctx_len), 1)
    if budget is None or chunks.size <= budget:
        return CofiringSample(tokens, int(tokens.size), int(ctxs.size), int(ctxs.size))
    chosen = np.sort(np.random.default_rng(seed).choice(chunks, size=budget, replace=False))
    keep = np.isin(tokens // ctx_len // rows, chosen)
    return CofiringSample(tokens[keep], int(tokens.size), int(np.unique(tokens[keep] // ctx_len).size), int(ctxs.size))
