"""The index computed the obvious way, for tests: scan every token's codes, sort in Python."""

from __future__ import annotations

from collections import Counter

import numpy as np

from actstore.store.codes import read_codes
from actstore.store.layout import FLAG_BOS, FLAG_PAD, NOT_TEXT, token_array
from actstore.store.store import Store

__all__ = ["occurrences_reference", "profile_reference"]


def occurrences_reference(store: Store, sae: str, *, exclude_flags: int = NOT_TEXT) -> dict[int, list[tuple[int, float]]]:
    """For every latent that fires: its (flat token, value) pairs, value descending, token ascending."""
    found: dict[int, list[tuple[int, float]]] = {}
    ctx_len = store.meta.ctx_len
    for unit in store.units_done(store.sae_stage(sae)):
        rows = store.grid.contexts(unit)
        sl = slice(rows.start, rows.stop)
        idx, val = read_codes(store, sae, sl)
        assert idx is not None and val is not None
        flags = store.read(token_array("flags"), sl)
        for c in range(idx.shape[0]):
            for p in range(ctx_len):
                if flags[c, p] & exclude_flags:
                    continue
                for latent, value in zip(idx[c, p].tolist(), val[c, p].astype(np.float32).tolist(), strict=True):
                    if latent >= 0:
                        found.setdefault(latent, []).append(((rows.start + c) * ctx_len + p, value))
    return {latent: sorted(pairs, key=lambda t: (-t[1], t[0])) for latent, pairs in found.items()}


def profile_reference(store: Store, sae: str, *, exclude_flags: int = FLAG_BOS | FLAG_PAD) -> tuple[
        dict[int, Counter[tuple[int, int]]], Counter[int], Counter[tuple[int, int]]]:
    """Token profiles the obvious way: per latent, its firings by (preceding token id or -1,
    token id); and over the indexed tokens, occurrences of each token id and each bigram."""
    firings: dict[int, Counter[tuple[int, int]]] = {}
    tokens: Counter[int] = Counter()
    bigrams: Counter[tuple[int, int]] = Counter()
    ctx_len = store.meta.ctx_len
    for unit in store.units_done(store.sae_stage(sae)):
        rows = store.grid.contexts(unit)
        sl = slice(rows.start, rows.stop)
        idx = read_codes(store, sae, sl, values=False).idx
        assert idx is not None
        ids, flags = store.read(token_array("ids"), sl), store.read(token_array("flags"), sl)
        for c in range(idx.shape[0]):
            for p in range(ctx_len):
                if flags[c, p] & exclude_flags:
                    continue
                prev = int(ids[c, p - 1]) if p > 0 and not flags[c, p - 1] & exclude_flags else -1
                tok = int(ids[c, p])
                tokens[tok] += 1
                if prev >= 0:
                    bigrams[(prev, tok)] += 1
                for latent in idx[c, p].tolist():
                    if latent >= 0:
                        firings.setdefault(latent, Counter())[(prev, tok)] += 1
    return firings, tokens, bigrams
