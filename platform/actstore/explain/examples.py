"""Drawing a latent's examples from the index: explainer windows and disjoint held-out ones.

Explainer windows: the ``top`` highest occurrences plus ``per_bin`` from each of ``bins``
equal-count activation bins. Held-out activating windows: ``test_per_bin`` per bin, from
contexts that hold no explainer window (delphi draws both from one pool with one seed, so many
test windows were shown to the explainer; here no context is on both sides). Non-activating
windows, where the latent is 0 on every shown token: half random; the rest hard ones, holding
the same token as an explainer example, or where one of its co-firing latents fires. Every draw
is seeded by (seed, latent); the ids (flat token index ``ctx * ctx_len + pos``) are recorded.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import polars as pl

from actstore.explain.config import ExampleConfig
from actstore.query.windows import windows
from actstore.store.layout import NOT_TEXT, token_array

__all__ = ["ExampleSet", "draw_examples", "split_occurrences"]


class ExampleSet(NamedTuple):
    """A latent's windows (query.windows columns). ``test`` adds ``label`` (1 activating, 0 not)
    and ``source`` (``bin<k>``, ``random``, ``same_token``, ``cofiring``)."""

    latent: int
    explain: pl.DataFrame
    test: pl.DataFrame

    def ids(self, frame: pl.DataFrame, ctx_len: int) -> list[int]:
        return (frame["ctx"] * ctx_len + frame["pos"].cast(pl.Int64)).to_list()


def draw_examples(latents: Any, latent: int, config: ExampleConfig) -> ExampleSet | None:
    """The examples of ``latent`` (a :class:`SaeLatents`), or None when it fires fewer than
    ``config.min_occurrences`` times."""
    store, ctx_len = latents.store, latents.store.meta.ctx_len
    tokens, values = latents.postings(latent)
    if tokens.size < max(config.min_occurrences, 1):
        return None
    rng = np.random.default_rng([config.seed, latent])
    chosen, test, bins = split_occurrences(tokens // ctx_len, config, rng)
    seen_ctx = set((tokens[chosen] // ctx_len).tolist())
    explain = windows(store, tokens[chosen], window=config.window, occurrences=latents.postings_by_token(latent), values=values[chosen])
    positives = windows(store, tokens[test], window=config.window, occurrences=latents.postings_by_token(latent), values=values[test])
    positives = positives.with_columns(label=pl.lit(1, pl.Int8), source=pl.Series(bins, dtype=pl.String))
    avoid = seen_ctx | set((tokens[test] // ctx_len).tolist())
    want = len(test) if config.negatives is None else config.negatives
    token_ids = explain.select(pl.col("token_ids").list.get(pl.col("focus"))).to_series().unique().to_list()
    negatives = _negatives(latents, latent, config, rng, want=want, avoid=avoid, token_ids=token_ids)
    return ExampleSet(latent, explain, pl.concat([positives, negatives], how="vertical"))


def split_occurrences(ctxs: np.ndarray, config: ExampleConfig, rng: np.random.Generator) -> tuple[list[int], list[int], list[str]]:
    """Indices into a latent's postings (value descending; ``ctxs``: each one's context) of the
    explainer examples and of the held-out activating examples (with their bin names). No
    held-out example shares a context with an explainer example."""
    n = ctxs.size
    which = np.empty(n, np.int64)
    which[np.arange(n)[::-1]] = (np.arange(n) * config.bins) // max(n, 1)  # equal-count bins, 0 = lowest
    chosen = list(range(min(config.top, n)))
    for b in range(config.bins):
        pool = np.setdiff1d(np.flatnonzero(which == b), chosen)
        chosen += rng.choice(pool, size=min(config.per_bin, pool.size), replace=False).tolist()
    chosen = sorted(set(chosen))
    shown = np.isin(ctxs, ctxs[chosen])
    test: list[int] = []
    bins: list[str] = []
    for b in range(config.bins):
        pool = np.flatnonzero((which == b) & ~shown)
        picked = rng.choice(pool, size=min(config.test_per_bin, pool.size), replace=False)
        test += sorted(picked.tolist())
        bins += [f"bin{b}"] * picked.size
    return chosen, test, bins


def _negatives(latents: Any, latent: int, config: ExampleConfig, rng: np.random.Generator, *, want: int,
               avoid: set[int], token_ids: list[int]) -> pl.DataFrame:
    """Windows where ``latent`` is 0 on every token: hard ones first (same token, co-firing;
    a quarter of ``want`` each), random ones for the rest."""
    store, ctx_len = latents.store, latents.store.meta.ctx_len
    hard = max(want // 4, 0)
    found = [store.find_tokens([t], limit=8 * hard + 8, window=0) for t in token_ids]
    same = np.concatenate([(f["ctx"] * ctx_len + f["pos"].cast(pl.Int64)).to_numpy() for f in found] + [np.zeros(0, np.int64)])
    cofiring = [latents.postings(int(other), limit=8 * hard + 8)[0] for other in latents.cofiring(latent, top=3)["latent"]]
    parts, taken = [], set(avoid)
    for source, pool, n in (("same_token", same, hard), ("cofiring", np.concatenate([*cofiring, np.zeros(0, np.int64)]), hard)):
        frame = _off_windows(latents, latent, config, rng.permutation(np.unique(pool)), n, taken)
        parts.append(frame.with_columns(source=pl.lit(source)))
    rest = want - sum(p.height for p in parts)
    parts.append(_off_windows(latents, latent, config, _random_tokens(store, rng, 8 * rest + 16), rest, taken)
                 .with_columns(source=pl.lit("random")))
    return pl.concat(parts, how="vertical").with_columns(label=pl.lit(0, pl.Int8)).select(
        [*parts[0].columns[:-1], "label", "source"])


def _off_windows(latents: Any, latent: int, config: ExampleConfig, candidates: np.ndarray, n: int,
                 taken: set[int]) -> pl.DataFrame:
    """Up to ``n`` windows around ``candidates`` (in order) where ``latent`` never fires, one per
    context, outside the contexts in ``taken`` (which grows)."""
    ctx_len = latents.store.meta.ctx_len
    fresh = [int(t) for t in candidates if int(t) // ctx_len not in taken]
    if n <= 0 or not fresh:
        return windows(latents.store, np.zeros(0, np.int64), window=config.window, occurrences=latents.postings_by_token(latent))
    frame = windows(latents.store, np.asarray(fresh, np.int64), window=config.window, occurrences=latents.postings_by_token(latent))
    keep = []
    for i, (ctx, vals) in enumerate(zip(frame["ctx"].to_list(), frame["values"].to_list(), strict=True)):
        if ctx not in taken and max(vals, default=0.0) == 0.0:
            taken.add(ctx)
            keep.append(i)
            if len(keep) == n:
                break
    return frame[keep]


def _random_tokens(store: Any, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random counted tokens (not BOS, padding or specials) of committed units."""
    units = store.units_done()
    if not units or n <= 0:
        return np.zeros(0, np.int64)
    ctxs = np.unique(np.concatenate([np.arange(store.grid.contexts(u).start, store.grid.contexts(u).stop) for u in units]))
    ctxs = np.sort(rng.choice(ctxs, size=min(n, ctxs.size), replace=False))
    flags = store.read_contexts(token_array("flags"), ctxs)
    out = []
    for row, ctx in enumerate(ctxs.tolist()):
        ok = np.flatnonzero((flags[row] & NOT_TEXT) == 0)
        if ok.size:
            out.append(ctx * store.meta.ctx_len + int(rng.choice(ok)))
    return rng.permutation(np.asarray(out, np.int64))
