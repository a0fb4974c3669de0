"""Token profiles, built with the index, equal a brute-force count over the codes and tokens."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import actstore
from actstore.explain.profile import (
    describe,
    profile_texts,
    read_latent_profile,
    token_profile,
    token_texts,
)
from actstore.index.profile import read_profile
from actstore.index.reference import profile_reference
from tests.coded_store import SAE


def _top(counter: Counter, kept: list, counts: list[int], top: int) -> None:
    """``kept`` are the ``top`` most frequent keys of ``counter`` with their exact counts."""
    assert len(kept) == min(top, len(counter))
    assert counts == [counter[k] for k in kept]
    assert counts == sorted(counter.values(), reverse=True)[: len(kept)]


def test_profiles_equal_a_brute_force_count(coded_store: Path) -> None:
    store = actstore.open(str(coded_store))
    latents = store.sae(SAE)
    top = latents.index.profile_top
    firings, tokens, bigrams = profile_reference(store, SAE)
    stored = read_profile(store, SAE, slice(None))
    for latent in range(latents.info.d_sae):
        fired = firings.get(latent, Counter())
        assert stored["count"][latent] == sum(fired.values()) == latents.counts()[latent]
        by_token: Counter[int] = Counter()
        for (_, tok), n in fired.items():
            by_token[tok] += n
        kept = [int(t) for t in stored["token_id"][latent] if t >= 0]
        _top(by_token, kept, stored["token_count"][latent][: len(kept)].tolist(), top)
        assert stored["token_corpus"][latent][: len(kept)].tolist() == [tokens[t] for t in kept]
        pairs = Counter({k: n for k, n in fired.items() if k[0] >= 0})
        kept_pairs = [(int(p), int(t)) for p, t in zip(stored["bigram_prev"][latent], stored["bigram_id"][latent], strict=True) if t >= 0]
        _top(pairs, kept_pairs, stored["bigram_count"][latent][: len(kept_pairs)].tolist(), top)
        assert stored["bigram_corpus"][latent][: len(kept_pairs)].tolist() == [bigrams[k] for k in kept_pairs]
        _, values = latents.postings(latent)
        assert stored["mass"][latent] == pytest.approx(float(values.astype(np.float64).sum()))
    # the table and the words of one busy latent
    busy = int(np.argmax(stored["count"]))
    frame = token_profile(latents, busy)
    tok = frame.filter(frame["kind"] == "token")
    assert tok["recall"].sum() <= 1 + 1e-9 and tok["mass_share"].sum() <= 1 + 1e-9
    first = tok.row(0, named=True)
    assert first["precision"] == first["count"] / tokens[first["token_id"]]
    assert first["token"] == token_texts(store, [first["token_id"]])[first["token_id"]]
    text = describe(read_latent_profile(latents, busy), token_texts(store, frame["token_id"].to_list() + frame["prev_id"].drop_nulls().to_list()))
    assert text is not None and first["token"].strip() in text
    texts = profile_texts(latents)
    assert texts.filter(texts["latent"] == busy)["text"].item() == text
    assert texts.height == int((stored["count"] > 0).sum())
