"""Finding a token sequence in the stored contexts (a scan of the token ids, unit by unit)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from actstore.errors import ConfigError
from actstore.query.windows import WINDOW_SCHEMA, store_tokenizer, windows
from actstore.store.layout import FLAG_BOS, FLAG_PAD, token_array
from actstore.store.store import TOKENS_STAGE

if TYPE_CHECKING:
    from actstore.store.store import Store

__all__ = ["encode_text", "find_tokens"]


def encode_text(store: Store, text: str) -> list[int]:
    """Token ids of ``text`` with the store's tokenizer, without special tokens.

    BPE tokenizers fold a leading space into the next token: "foo" and " foo" differ.
    """
    return [int(i) for i in store_tokenizer(store).encode(text, add_special_tokens=False)]


def find_tokens(store: Store, sequence: str | list[int], *, limit: int | None = 100, window: int = 16) -> pl.DataFrame:
    """Where ``sequence`` (text, or token ids) occurs in committed units, in store order, at
    most ``limit`` matches (``None``: all). One row per match at its first token, with a window
    around it as :meth:`SaeLatents.top_k` shows (``value`` is 0)."""
    ids = encode_text(store, sequence) if isinstance(sequence, str) else [int(i) for i in sequence]
    if not ids:
        raise ConfigError(f"the sequence {sequence!r} has no tokens")
    seq = np.asarray(ids, np.int64)
    m, found = seq.size, []
    for unit in store.units_done(TOKENS_STAGE):
        rows = store.grid.contexts(unit)
        tok = store.read(token_array("ids"), slice(rows.start, rows.stop)).astype(np.int64)
        ok = (store.read(token_array("flags"), slice(rows.start, rows.stop)) & (FLAG_BOS | FLAG_PAD)) == 0
        span = tok.shape[1] - m + 1
        if span <= 0:
            break
        hit = np.ones((tok.shape[0], span), bool)
        for j in range(m):
            hit &= (tok[:, j : j + span] == seq[j]) & ok[:, j : j + span]
        c, p = np.nonzero(hit)
        found.append((rows.start + c) * store.meta.ctx_len + p)
        if limit is not None and sum(f.size for f in found) >= limit:
            break
    flat = np.concatenate(found)[:limit] if found else np.zeros(0, np.int64)
    if flat.size == 0:
        return pl.DataFrame(schema=WINDOW_SCHEMA)
    return windows(store, flat, window=window)
