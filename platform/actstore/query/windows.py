"""Token windows around stored positions: the token strings, one latent's value on each token,
and which token is the focus. Windows stay inside the focus token's document and skip BOS and
padding, so an example never shows text from a neighbouring document."""

from __future__ import annotations

import json
from itertools import pairwise
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from actstore.config import HFSource
from actstore.corpus.tokenize import source_tokenizer
from actstore.store.layout import FLAG_BOS, FLAG_PAD, token_array
from actstore.store.store import reader_pool
from actstore.store.tokenizer import StoredTokenizer, read_tokenizer

if TYPE_CHECKING:
    from actstore.store.store import Store

__all__ = ["WINDOW_SCHEMA", "decode_tokens", "split_prefixes", "store_tokenizer", "token_runs", "windows"]

WINDOW_SCHEMA = pl.Schema({
    "doc": pl.Int64(), "ctx": pl.Int64(), "pos": pl.Int32(), "value": pl.Float32(),
    "tokens": pl.List(pl.String()), "token_ids": pl.List(pl.Int32()), "values": pl.List(pl.Float32()), "focus": pl.Int32(),
})


_TOKENIZERS: dict[str, StoredTokenizer] = {}  # by the stored file's SHA-256, or the source of a v1 store


def store_tokenizer(store: Store) -> StoredTokenizer:
    """The store's tokenizer, loaded once per process: the copy inside the store, read with the
    ``tokenizers`` library (format v2); for a format v1 store, loaded from the recorded source
    through transformers (it must be on this machine; ``actstore upgrade`` stores a copy)."""
    info = store.meta.tokenizer
    key = info.sha256 or json.dumps(info.source, sort_keys=True)
    found = _TOKENIZERS.get(key)
    if found is None:
        found = read_tokenizer(store.files, info) if info.file is not None else source_tokenizer(HFSource(**info.source))
        _TOKENIZERS[key] = found
    return found


def decode_tokens(store: Store, ids: list[int]) -> list[str]:
    """Each token's text as it reads in running text, one string per token.

    A token's text is the growth of the decoded prefix, so tokenizers that drop a token's
    leading space when it is decoded alone keep it here. A character whose UTF-8 bytes are
    split over several tokens (byte-level BPE, byte fallback) is shown once, on the token that
    completes it; the tokens before it in that run are empty strings (:func:`token_runs` groups
    them, and the renderers mark and shade such a run as one). Bytes cut off by the ends of the
    sequence show as U+FFFD, the replacement character. Never is a decoded prefix repeated.
    """
    tok = store_tokenizer(store)
    prefixes = [""] + [str(s) for s in tok.batch_decode([ids[: i + 1] for i in range(len(ids))])]
    return split_prefixes(prefixes)


def split_prefixes(prefixes: list[str]) -> list[str]:
    """Token texts from the decoded prefixes ``["", decode(ids[:1]), ..., decode(ids)]``.

    A boundary between tokens is clean when the text decoded up to it is a prefix of the whole
    text: a prefix ending inside a character decodes to a replacement character that the whole
    text does not hold there. The tokens between two clean boundaries form a run: the last one
    carries the run's text, the others are empty.
    """
    whole = prefixes[-1]
    clean = [i for i, p in enumerate(prefixes) if whole.startswith(p)]
    texts = [""] * (len(prefixes) - 1)
    for a, b in pairwise(clean):
        texts[b - 1] = prefixes[b][len(prefixes[a]):]
    return texts


def token_runs(tokens: list[str]) -> list[tuple[int, int]]:
    """``(start, stop)`` of the runs of ``tokens`` that show as one piece of text: each ends
    with a non-empty token and holds the empty ones before it (the first bytes of a character
    split over tokens, see :func:`decode_tokens`); trailing empty tokens form a run of their own."""
    runs, start = [], 0
    for i, text in enumerate(tokens):
        if text:
            runs.append((start, i + 1))
            start = i + 1
    if start < len(tokens):
        runs.append((start, len(tokens)))
    return runs


def windows(store: Store, tokens: np.ndarray, *, window: int, values: np.ndarray | None = None,
            occurrences: tuple[np.ndarray, np.ndarray] | None = None) -> pl.DataFrame:
    """One row per flat token index in ``tokens``: up to ``window`` tokens either side of it.

    ``occurrences``: a latent's postings as (flat token index ascending, value), e.g.
    :meth:`SaeLatents.postings_by_token`. The ``values`` column then holds the latent's value on
    each window token (0 where it did not fire), looked up there rather than in the token-major
    codes: a window then costs no read of a context's codes (ctx_len x code cap) to show one
    latent on ~25 tokens. Empty lists when no occurrences are given.
    """
    ctx_len = store.meta.ctx_len
    tokens = np.asarray(tokens, dtype=np.int64)
    ctxs, inverse = np.unique(tokens // ctx_len, return_inverse=True)
    names = ("ids", "doc", "flags")  # read concurrently: each is one zarr call waiting on its chunks
    rows = dict(zip(names, reader_pool().map(lambda name: store.read_contexts(token_array(name), ctxs), names), strict=True))
    latent = occurrences is not None
    if occurrences is not None:
        occ_tokens, occ_values = occurrences
        flat = ctxs[:, None] * ctx_len + np.arange(ctx_len)  # [ctx, pos] flat token index
        dense = np.zeros(flat.shape, np.float32)
        if occ_tokens.size:
            at = np.minimum(np.searchsorted(occ_tokens, flat), occ_tokens.size - 1)
            hit = occ_tokens[at] == flat
            dense[hit] = occ_values[at[hit]]
    records: dict[str, list[Any]] = {k: [] for k in WINDOW_SCHEMA}
    for n, (token, r) in enumerate(zip(tokens.tolist(), inverse.tolist(), strict=True)):
        pos = token % ctx_len
        lo, hi = max(0, pos - window), min(ctx_len, pos + window + 1)
        keep = (rows["doc"][r, lo:hi] == rows["doc"][r, pos]) & ((rows["flags"][r, lo:hi] & (FLAG_BOS | FLAG_PAD)) == 0)
        keep[pos - lo] = True
        at = np.flatnonzero(keep)
        ids = rows["ids"][r, lo:hi][at]
        records["doc"].append(int(rows["doc"][r, pos]))
        records["ctx"].append(int(ctxs[r]))
        records["pos"].append(pos)
        records["value"].append(float(values[n]) if values is not None else (float(dense[r, pos]) if latent else 0.0))
        records["token_ids"].append(ids.tolist())
        records["tokens"].append(decode_tokens(store, ids.tolist()) if ids.size else [])
        records["values"].append(dense[r, lo:hi][at].tolist() if latent else [])
        records["focus"].append(int(np.searchsorted(at, pos - lo)))
    return pl.DataFrame(records, schema=WINDOW_SCHEMA)
