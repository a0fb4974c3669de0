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
from actstore.store.layout import FLAG_BOS, FLAG_PAD, code_array, token_array
from actstore.store.tokenizer import StoredTokenizer, read_tokenizer

if TYPE_CHECKING:
    from actstore.store.store import Store

__all__ = ["WINDOW_SCHEMA", "decode_tokens", "store_tokenizer", "windows"]

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
    """Each token's text as it reads in running text: the growth of the decoded prefix, so
    tokenizers that drop a token's leading space when it is decoded alone keep it here."""
    tok = store_tokenizer(store)
    prefixes = [""] + [str(s) for s in tok.batch_decode([ids[: i + 1] for i in range(len(ids))])]
    return [b[len(a):] if b.startswith(a) else b for a, b in pairwise(prefixes)]


def windows(store: Store, tokens: np.ndarray, *, window: int, sae: str | None = None, latent: int | None = None,
            values: np.ndarray | None = None) -> pl.DataFrame:
    """One row per flat token index in ``tokens``: up to ``window`` tokens either side of it.

    ``values`` column: the latent's value on each window token (from the token-major codes,
    0 where it did not fire or fell past the code cap); empty lists when no latent is given.
    """
    ctx_len = store.meta.ctx_len
    tokens = np.asarray(tokens, dtype=np.int64)
    ctxs, inverse = np.unique(tokens // ctx_len, return_inverse=True)
    rows = {name: store.read_contexts(token_array(name), ctxs) for name in ("ids", "doc", "flags")}
    if latent is not None:
        assert sae is not None
        idx, val = store.read_contexts(code_array(sae, "idx"), ctxs), store.read_contexts(code_array(sae, "val"), ctxs)
        dense = np.where(idx == latent, val.astype(np.float32), 0).sum(-1)  # [ctx, pos]: a latent appears once per token
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
        records["value"].append(float(values[n]) if values is not None else (float(dense[r, pos]) if latent is not None else 0.0))
        records["token_ids"].append(ids.tolist())
        records["tokens"].append(decode_tokens(store, ids.tolist()) if ids.size else [])
        records["values"].append(dense[r, lo:hi][at].tolist() if latent is not None else [])
        records["focus"].append(int(np.searchsorted(at, pos - lo)))
    return pl.DataFrame(records, schema=WINDOW_SCHEMA)
