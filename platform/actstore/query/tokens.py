"""Finding text or a token sequence in the stored contexts (a scan of the token ids, unit by unit).

Text is searched in the forms a user means by it: as typed, and word-initial (with a leading
space). Most tokenizers give a word inside a line another token than at its start, so
"async def" and " async def" are different token sequences; the result says which forms were
searched and how often each matched.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from actstore.errors import ConfigError
from actstore.query.filters import DocumentSet, Where, resolve_where
from actstore.query.windows import WINDOW_SCHEMA, store_tokenizer, windows
from actstore.store.layout import FLAG_BOS, FLAG_PAD, token_array
from actstore.store.store import TOKENS_STAGE

if TYPE_CHECKING:
    from actstore.store.store import Store

__all__ = ["MATCH_SCHEMA", "SearchForm", "TextMatches", "encode_text", "find_sequences", "find_text", "find_tokens",
           "text_forms"]

MATCH_SCHEMA = pl.Schema({
    "doc": pl.Int64(), "ctx": pl.Int64(), "pos": pl.Int32(), "length": pl.Int32(), "form": pl.String(),
    "tokens": pl.List(pl.String()), "token_ids": pl.List(pl.Int32()), "focus": pl.Int32(),
})


@dataclass(frozen=True)
class SearchForm:
    """One token sequence searched for: the text it encodes and how many places matched it."""

    text: str
    token_ids: tuple[int, ...]
    count: int


@dataclass(frozen=True)
class TextMatches:
    """What a search found: the forms searched, the total number of matches (all of them, not
    only those shown) and the first ``limit`` matches in store order (columns ``MATCH_SCHEMA``:
    the match starts at ``pos`` and covers ``length`` tokens, ``focus`` is its first token in
    the window)."""

    forms: tuple[SearchForm, ...]
    total: int
    matches: pl.DataFrame


def encode_text(store: Store, text: str) -> list[int]:
    """Token ids of ``text`` with the store's tokenizer, without special tokens.

    BPE tokenizers fold a leading space into the next token: "foo" and " foo" differ.
    """
    return [int(i) for i in store_tokenizer(store).encode(text, add_special_tokens=False)]


def text_forms(store: Store, text: str) -> list[tuple[str, list[int]]]:
    """The forms of ``text`` to search: as typed, and word-initial (a leading space) unless it
    already starts with whitespace; a form whose tokens equal an earlier one's is left out."""
    if not text:
        raise ConfigError("the search text is empty")
    candidates = [text] if text[0].isspace() else [text, " " + text]
    forms: dict[tuple[int, ...], str] = {}
    for form in candidates:
        forms.setdefault(tuple(encode_text(store, form)), form)
    return [(form, list(ids)) for ids, form in forms.items()]


def _blocks(store: Store, docs: DocumentSet | None) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(contexts, token ids, counted-token mask) of each committed unit, or of the contexts of
    ``docs`` in it with only the set's tokens counted."""
    for unit in store.units_done(TOKENS_STAGE):
        rows = store.grid.contexts(unit)
        if docs is None:
            tok = store.read(token_array("ids"), slice(rows.start, rows.stop))
            ok = (store.read(token_array("flags"), slice(rows.start, rows.stop)) & (FLAG_BOS | FLAG_PAD)) == 0
            yield np.arange(rows.start, rows.stop), tok, ok
            continue
        ctxs = docs.contexts[(docs.contexts >= rows.start) & (docs.contexts < rows.stop)]
        if ctxs.size:
            yield ctxs, store.read_contexts(token_array("ids"), ctxs), docs.slots(ctxs) >= 0


def _positions(store: Store, ids: Sequence[int], *, stop_after: int | None = None,
               docs: DocumentSet | None = None) -> np.ndarray:
    """Flat token indices (store order) where ``ids`` starts, within one context, over counted
    tokens only (of ``docs`` when given: its contexts are all that is read); the scan stops at
    the unit where ``stop_after`` matches have been found."""
    if not ids:
        raise ConfigError("the sequence has no tokens")
    seq = np.asarray(ids, np.int64)
    m, found, n = seq.size, [], 0
    for ctxs, tok, ok in _blocks(store, docs):
        tok = tok.astype(np.int64)
        span = tok.shape[1] - m + 1
        if span <= 0:
            break
        hit = np.ones((tok.shape[0], span), bool)
        for j in range(m):
            hit &= (tok[:, j : j + span] == seq[j]) & ok[:, j : j + span]
        c, p = np.nonzero(hit)
        found.append(ctxs[c] * store.meta.ctx_len + p)
        n += c.size
        if stop_after is not None and n >= stop_after:
            break
    return np.concatenate(found) if found else np.zeros(0, np.int64)


def find_tokens(store: Store, sequence: str | list[int], *, limit: int | None = 100, window: int = 16,
                where: Where | None = None) -> pl.DataFrame:
    """Where ``sequence`` (text encoded exactly as given, or token ids) occurs in committed
    units (in the documents ``where`` matches), in store order, at most ``limit`` matches
    (``None``: all). One row per match at its first token, with a window around it as
    :meth:`SaeLatents.top_k` shows (``value`` is 0). :func:`find_text` searches text as a user
    means it (also word-initial) and counts all matches."""
    ids = encode_text(store, sequence) if isinstance(sequence, str) else [int(i) for i in sequence]
    if not ids:
        raise ConfigError(f"the sequence {sequence!r} has no tokens")
    flat = _positions(store, ids, stop_after=limit, docs=resolve_where(store, where))[:limit]
    return windows(store, flat, window=window) if flat.size else pl.DataFrame(schema=WINDOW_SCHEMA)


def find_sequences(store: Store, forms: Sequence[tuple[str, Sequence[int]]], *, limit: int | None = 100,
                   window: int = 16, where: Where | None = None) -> TextMatches:
    """Every place any of ``forms`` (text, token ids) occurs (in the documents ``where``
    matches), counted in full; windows for the first ``limit`` (``None``: all) in store order."""
    docs = resolve_where(store, where)
    found = [(form, tuple(int(i) for i in ids), _positions(store, ids, docs=docs)) for form, ids in forms]
    if not found:
        raise ConfigError("nothing to search for")
    flat = np.concatenate([f[2] for f in found])
    length = np.concatenate([np.full(f[2].size, len(f[1]), np.int32) for f in found])
    which = np.concatenate([np.full(f[2].size, i, np.int32) for i, f in enumerate(found)])
    order = np.argsort(flat, kind="stable")[:limit]
    searched = tuple(SearchForm(form, ids, int(pos.size)) for form, ids, pos in found)
    if order.size == 0:
        return TextMatches(searched, 0, pl.DataFrame(schema=MATCH_SCHEMA))
    shown = windows(store, flat[order], window=window).drop("value", "values")
    shown = shown.with_columns(length=pl.Series(length[order]), form=pl.Series([found[i][0] for i in which[order]]))
    return TextMatches(searched, int(flat.size), shown.select(list(MATCH_SCHEMA)).cast(MATCH_SCHEMA))


def find_text(store: Store, text: str, *, limit: int | None = 100, window: int = 16,
              where: Where | None = None) -> TextMatches:
    """Where ``text`` occurs as typed or word-initial (see :func:`text_forms`) in the documents
    ``where`` matches (all: None), all matches counted, the first ``limit`` with their windows."""
    return find_sequences(store, text_forms(store, text), limit=limit, window=window, where=where)
