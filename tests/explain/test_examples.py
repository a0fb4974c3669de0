"""Example selection: disjoint seeded splits (a property test), the explainer prompt of a known
store, negatives where the latent is really off, and the cache key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import actstore
from actstore.explain.config import ExampleConfig, ExplainConfig
from actstore.explain.examples import draw_examples, split_occurrences
from actstore.explain.profile import Profiles
from actstore.explain.prompts import highlight, marked
from actstore.explain.run import cache_key, plan_jobs
from actstore.query.windows import decode_tokens
from actstore.store.codes import read_codes
from tests.coded_store import SAE


@settings(max_examples=200, deadline=None)
@given(ctxs=st.lists(st.integers(0, 30), min_size=1, max_size=300), top=st.integers(0, 8), bins=st.integers(1, 10),
       per_bin=st.integers(0, 5), test_per_bin=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_splits_are_disjoint_by_context_and_seeded(ctxs, top, bins, per_bin, test_per_bin, seed) -> None:
    config = ExampleConfig(top=top, bins=bins, per_bin=per_bin, test_per_bin=test_per_bin, seed=seed)
    arr = np.asarray(ctxs, np.int64)
    shown, test, names = split_occurrences(arr, config, np.random.default_rng(seed))
    assert not set(arr[shown].tolist()) & set(arr[test].tolist())  # no context on both sides
    assert len(set(shown)) == len(shown) and len(set(test)) == len(test) and len(names) == len(test)
    assert shown[: min(top, arr.size)] == list(range(min(top, arr.size)))  # the top ones lead
    again = split_occurrences(arr, config, np.random.default_rng(seed))
    assert again == (shown, test, names)


def _dense_column(store, latent: int) -> np.ndarray:
    idx, val = read_codes(store, SAE, slice(None))
    return np.where(idx == latent, val, 0).sum(-1).reshape(-1)


def test_prompt_shows_the_right_windows_marked_and_negatives_are_off(explain_store: Path) -> None:
    store = actstore.open(str(explain_store))
    latents = store.sae(SAE)
    latent = int(latents.density().sort("count", descending=True)["latent"][3])
    config = ExplainConfig(examples=ExampleConfig(top=3, bins=3, per_bin=1, test_per_bin=2, window=4))
    profiles = Profiles(latents)
    job, profiled = plan_jobs(latents, latent, config, density=0.1, profiles=profiles)
    assert (job.kind, profiled.kind, profiled.text) == ("auto", "profile", profiles.describe(latent))
    assert profiled.plain == job.plain and profiled.key != job.key  # one set of windows, two explanations
    assert job.baseline_latent != latent and job.baseline_text == profiles.describe(job.baseline_latent)
    assert profiles.evidence(latent) in job.messages[-1]["content"]  # the profile is the explainer's evidence
    column = _dense_column(store, latent)
    ids = store.read("tokens/ids", slice(None)).reshape(-1)
    doc = store.read("tokens/doc", slice(None)).reshape(-1)
    ctx_len = store.meta.ctx_len
    prompt = job.messages[-1]["content"]
    for flat in job.explainer_ids:  # each window rebuilt from the raw arrays, marked at >= 0.3 x its max
        assert column[flat] > 0
        ctx, pos = divmod(flat, ctx_len)
        at = [ctx * ctx_len + p for p in range(max(1, pos - 4), min(ctx_len, pos + 5)) if doc[ctx * ctx_len + p] == doc[flat]]
        text = highlight(decode_tokens(store, ids[at].tolist()), marked(column[at].tolist(), threshold=0.3))
        assert text in prompt
    assert "<<" in prompt and len(job.explainer_ids) == 3 + 3
    assert all(column[t] > 0 for t in job.test_ids) and all(column[t] == 0 for t in job.negative_ids)
    shown_ctx = {t // ctx_len for t in job.explainer_ids}
    assert not shown_ctx & {t // ctx_len for t in job.test_ids + job.negative_ids}
    drawn = draw_examples(latents, latent, config.examples)
    assert drawn is not None and set(drawn.test["source"].to_list()) >= {"random"}
    assert job.labels == [1] * len(job.test_ids) + [0] * len(job.negative_ids)
    assert plan_jobs(latents, latent, config, density=0.1, profiles=profiles)[0] == job  # seeded: the same draw again


def test_cache_key_changes_with_each_input() -> None:
    base = dict(sae="s", latent=1, templates="t", model="m", sampling="{}", explainer_ids=[1, 2], test_ids=[3],
                negative_ids=[4])
    key = cache_key(**base)
    assert cache_key(**base) == key
    changes = dict(sae="s2", latent=2, templates="t2", model="m2", sampling='{"temperature": 1}', explainer_ids=[1, 5],
                   test_ids=[6], negative_ids=[7], kind="profile", text="the token x", baseline="the token y")
    for name, value in changes.items():
        assert cache_key(**{**base, name: value}) != key, name
