"""A latent's token profile (kept with its index) as a table, and in words.

:func:`token_profile` reads the stored profile (``actstore.index.profile``): the tokens a latent
fires on most and the bigrams (preceding token, token), each with ``precision`` (of that token's
occurrences among the indexed tokens, the share where the latent fires), ``recall`` (of the
latent's firings, the share on that token) and ``mass_share`` (of the sum of its values).
:func:`describe` turns a profile into a short phrase, the ``kind: profile`` explanation: exact
evidence that needs no LLM, searched and scored like any other explanation, and the explainer
prompt's evidence (small models copy it well).
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import numpy as np
import polars as pl

from actstore.errors import IndexNotFoundError
from actstore.explain.prompts import evidence
from actstore.index.profile import read_profile
from actstore.query.windows import store_tokenizer

__all__ = ["PROFILE_AUTHOR", "PROFILE_SCHEMA", "Profile", "Profiles", "describe", "profile_text", "profile_texts", "read_latent_profile", "token_profile",
           "token_texts"]

PROFILE_SCHEMA = pl.Schema({
    "kind": pl.String(), "rank": pl.Int32(), "prev": pl.String(), "token": pl.String(), "prev_id": pl.Int32(),
    "token_id": pl.Int32(), "count": pl.Int64(), "corpus": pl.Int64(), "precision": pl.Float64(),
    "recall": pl.Float64(), "mass_share": pl.Float64(),
})
PROFILE_AUTHOR = "token-profile"  # the author of ``kind: profile`` explanations
COVER = 0.8  # a description lists tokens until they hold this share of the firings...
MOST_TOKENS = 5  # ...or this many
CONTEXT_RECALL = 0.5  # a bigram is named when it holds this share of the firings


def token_texts(store: Any, ids: list[int]) -> dict[int, str]:
    """Each token id's text as it reads in running text (a leading space kept even where a
    tokenizer drops it when the token is decoded alone): what ``[id, id]`` adds to ``[id]``."""
    ids = sorted({int(i) for i in ids if i >= 0})
    tok = store_tokenizer(store)
    texts = tok.batch_decode([[i] for i in ids] + [[i, i] for i in ids])
    alone, twice = texts[: len(ids)], texts[len(ids):]
    return {i: b[len(a):] if b.startswith(a) else a for i, a, b in zip(ids, alone, twice, strict=True)}


class Profile(NamedTuple):
    """One latent's stored profile rows (``[top]`` arrays; ids -1 where fewer were kept);
    ``fired``: its occurrences, ``mass``: their values' sum."""

    fired: int
    mass: float
    token_id: np.ndarray
    token_count: np.ndarray
    token_mass: np.ndarray
    token_corpus: np.ndarray
    bigram_prev: np.ndarray
    bigram_id: np.ndarray
    bigram_count: np.ndarray
    bigram_mass: np.ndarray
    bigram_corpus: np.ndarray


def _check(latents: Any) -> None:
    plan = latents.index
    if not plan.profile_top:
        raise IndexNotFoundError(
            f"the index of SAE {latents.name!r} was built before token profiles existed: rebuild it with "
            f"`actstore index {latents.store.location.url} --sae {latents.name}`")


def read_latent_profile(latents: Any, latent: int) -> Profile:
    """The stored profile of ``latent`` (a :class:`SaeLatents` with a complete index)."""
    _check(latents)
    latent = latents._check_latent(latent)
    rows = read_profile(latents.store, latents.name, slice(latent, latent + 1))
    return Profile(int(rows["count"][0]), float(rows["mass"][0]), *(rows[n][0] for n in Profile._fields[2:]))


def token_profile(latents: Any, latent: int) -> pl.DataFrame:
    """``latent``'s kept tokens, then its kept bigrams, each by count: :data:`PROFILE_SCHEMA`."""
    p = read_latent_profile(latents, latent)
    texts = token_texts(latents.store, [*p.token_id.tolist(), *p.bigram_prev.tolist(), *p.bigram_id.tolist()])
    frames = []
    for kind, ids, prev, count, mass, corpus in (
            ("token", p.token_id, np.full_like(p.token_id, -1), p.token_count, p.token_mass, p.token_corpus),
            ("bigram", p.bigram_id, p.bigram_prev, p.bigram_count, p.bigram_mass, p.bigram_corpus)):
        kept = ids >= 0
        frames.append(pl.DataFrame({
            "kind": kind, "rank": np.arange(int(kept.sum()), dtype=np.int32),
            "prev": [texts[int(i)] if i >= 0 else None for i in prev[kept]],
            "token": [texts[int(i)] for i in ids[kept]], "prev_id": [int(i) if i >= 0 else None for i in prev[kept]],
            "token_id": ids[kept], "count": count[kept], "corpus": corpus[kept],
            "precision": count[kept] / np.maximum(corpus[kept], 1), "recall": count[kept] / max(p.fired, 1),
            "mass_share": mass[kept] / (p.mass or 1.0)}, schema_overrides={"prev_id": pl.Int32(), "prev": pl.String()}))
    return pl.concat(frames, how="vertical_relaxed").cast(PROFILE_SCHEMA)  # type: ignore[arg-type]


def profile_text(latents: Any, latent: int) -> str | None:
    """``latent``'s profile in words (:func:`describe`): its ``kind: profile`` explanation."""
    p = read_latent_profile(latents, latent)
    return describe(p, token_texts(latents.store, [*p.token_id.tolist(), *p.bigram_prev.tolist(), *p.bigram_id.tolist()]))


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def describe(p: Profile, texts: dict[int, str]) -> str | None:
    """The profile in words (None for a latent that never fires): the tokens holding
    :data:`COVER` of the firings (at most :data:`MOST_TOKENS`); the first one with its preceding
    token when one bigram holds :data:`CONTEXT_RECALL` of the firings and is at least twice as
    precise as its token alone; "among others" when the tokens named hold under half."""
    if p.fired <= 0 or p.token_id[0] < 0:
        return None
    kept = np.flatnonzero(p.token_id >= 0)
    recall = p.token_count[kept] / p.fired
    n = min(int(np.searchsorted(np.cumsum(recall), COVER)) + 1, MOST_TOKENS, kept.size)
    named = [_quoted(texts[int(i)]) for i in p.token_id[kept[:n]]]
    if p.bigram_id[0] >= 0 and p.bigram_count[0] / p.fired >= CONTEXT_RECALL:
        mine = np.flatnonzero(p.token_id == p.bigram_id[0])
        alone = p.token_count[mine[0]] / max(p.token_corpus[mine[0]], 1) if mine.size else 0.0
        if p.bigram_count[0] / max(p.bigram_corpus[0], 1) >= 2 * alone:
            first = f"{_quoted(texts[int(p.bigram_id[0])])} after {_quoted(texts[int(p.bigram_prev[0])])}"
            named = [first, *(t for t in named if t != _quoted(texts[int(p.bigram_id[0])]))]
    words = named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]
    tail = ", among others" if recall[:n].sum() < 0.5 else ""
    return f"the token{'s' if len(named) > 1 else ''} {words}{tail}"


class Profiles:
    """Every latent's stored profile, read whole once (a few hundred bytes a latent) with its
    tokens decoded once: what an explain run needs per latent (its description, the explainer's
    evidence, a baseline from another latent) and what search indexes."""

    def __init__(self, latents: Any) -> None:
        _check(latents)
        self.rows = read_profile(latents.store, latents.name, slice(None))
        ids = np.concatenate([self.rows[n].ravel() for n in ("token_id", "bigram_prev", "bigram_id")])
        self.texts = token_texts(latents.store, np.unique(ids).tolist())
        self._described: dict[int, str | None] = {}

    def profile(self, latent: int) -> Profile:
        r = self.rows
        return Profile(int(r["count"][latent]), float(r["mass"][latent]), *(r[n][latent] for n in Profile._fields[2:]))

    def describe(self, latent: int) -> str | None:
        """:func:`describe` of ``latent``'s profile."""
        if latent not in self._described:
            self._described[latent] = describe(self.profile(latent), self.texts)
        return self._described[latent]

    def evidence(self, latent: int, *, tokens: int = MOST_TOKENS, bigrams: int = 2) -> str | None:
        """The explainer prompt's profile line (``prompts.evidence``): the first ``tokens``
        tokens with their recall and precision, and of the first ``bigrams`` bigrams those holding
        :data:`CONTEXT_RECALL` of the firings (rarer ones invite a small model to copy them as the
        answer); None if it never fires."""
        p = self.profile(latent)
        if p.fired <= 0:
            return None
        toks = [(self.texts[int(i)], n / p.fired, n / max(c, 1))
                for i, n, c in zip(p.token_id[:tokens], p.token_count, p.token_corpus, strict=False) if i >= 0]
        pairs = [(self.texts[int(a)], self.texts[int(b)], n / p.fired, n / max(c, 1))
                 for a, b, n, c in zip(p.bigram_prev[:bigrams], p.bigram_id, p.bigram_count, p.bigram_corpus, strict=False)
                 if b >= 0 and n / p.fired >= CONTEXT_RECALL]
        return evidence(toks, pairs)

    def baseline(self, latent: int, seed: int) -> tuple[int, str] | None:
        """Another latent's description, to score on ``latent``'s windows as a shuffled
        baseline: a seeded draw among the latents that fire whose top token differs from
        ``latent``'s (so the baseline cannot be right by accident)."""
        top = self.rows["token_id"][:, 0]
        pool = np.flatnonzero((self.rows["count"] > 0) & (top != top[latent]) & (top >= 0))
        if pool.size == 0:
            return None
        other = int(np.random.default_rng([seed, latent, 2]).choice(pool))
        text = self.describe(other)
        return None if text is None else (other, text)

    def all_texts(self) -> pl.DataFrame:
        """:meth:`describe` of every latent that fires: columns ``latent``, ``text``."""
        found = [(int(i), self.describe(int(i))) for i in np.flatnonzero(self.rows["count"] > 0)]
        return pl.DataFrame([(i, t) for i, t in found if t is not None], schema={"latent": pl.Int64(), "text": pl.String()},
                            orient="row")


def profile_texts(latents: Any) -> pl.DataFrame:
    """The profiles as explanations (columns ``latent``, ``text``) of every latent that fires."""
    return Profiles(latents).all_texts()
