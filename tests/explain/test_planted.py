"""Planted latents: directions fitted on the shared store's activations so that each fires on
exactly one word, encoded into the store as an SAE and indexed. Their right answers are known,
so the token profiles, the embedding scorer, the informativeness checks, search and the
explainer are measured against them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import actstore
from actstore.cli import main
from actstore.cluster.encode import run_encode
from actstore.cluster.explain import run_explain
from actstore.cluster.index import run_index
from actstore.explain.config import ExplainConfig
from actstore.explain.planted import concept_ids, fit_planted, save_planted
from actstore.explain.profile import Profiles
from actstore.explain.run import plan_jobs
from actstore.explain.scoring import Worker, score_text
from tests.coded_store import SITE

WORDS = ["return", "sparse", "brown", "lazy", "residual", "autoencoder"]  # one token each, linearly separable here
PLANTED = "planted"
EXAMPLES = {"top": 2, "bins": 2, "per_bin": 1, "test_per_bin": 4, "negatives": 8, "window": 4, "min_occurrences": 5}


@pytest.fixture(scope="module")
def planted(coded_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the shared store with the SAE ``planted``: latent i fires on ``WORDS[i]``."""
    root = tmp_path_factory.mktemp("planted")
    shutil.copytree(coded_store, root / "store")
    store = actstore.open(str(root / "store"))
    fitted = fit_planted(store, SITE, {w: concept_ids(store, [f" {w}"]) for w in WORDS}, holdout=0)
    assert fitted.report["precision"].to_list() == [1.0] * 6 and fitted.report["recall"].to_list() == [1.0] * 6
    run_encode(str(root / "store"), str(save_planted(fitted, root / "sae/params.npz")), name=PLANTED, site=SITE,
               code_cap=len(WORDS))
    run_index(str(root / "store"), PLANTED)
    return root / "store"


def test_profiles_find_the_planted_words_and_search_them(planted: Path) -> None:
    latents = actstore.open(str(planted)).sae(PLANTED)
    for i, word in enumerate(WORDS):
        first = latents.token_profile(i).row(0, named=True)
        assert (first["kind"], first["token"], first["precision"], first["recall"]) == ("token", f" {word}", 1.0, 1.0)
        assert latents.search(word)["latent"][0] == i  # every latent's profile is searchable, unexplained or not
    hits = latents.search("brown")
    assert (hits["kind"][0], hits["text"][0]) == ("profile", 'the token " brown"')


def test_embedding_scorer_tells_the_true_explanation_from_another_concepts(planted: Path) -> None:
    latents = actstore.open(str(planted)).sae(PLANTED)
    config = ExplainConfig.model_validate({"examples": EXAMPLES, "scorers": ["embedding"], "kinds": ["profile"]})
    worker, profiles = Worker(config), Profiles(latents)
    auroc = {}
    for i, word in enumerate(WORDS):
        job = plan_jobs(latents, i, config, density=0.01, profiles=profiles)[0]
        for name, text in (("true", f"the word {word}"), ("wrong", f"the word {WORDS[(i + 1) % 6]}"),
                           ("random", "names of flowering garden plants")):
            auroc[i, name] = score_text(worker, job, text, config)["embedding_auroc"]
    gaps = [auroc[i, "true"] - auroc[i, "wrong"] for i in range(6)]
    print("planted AUROC (true, wrong, random):", {w: tuple(round(auroc[i, n], 2) for n in ("true", "wrong", "random"))
                                                   for i, w in enumerate(WORDS)})
    assert sum(g > 0 for g in gaps) >= 5 and np.mean(gaps) >= 0.2, gaps
    assert np.mean([auroc[i, "true"] - auroc[i, "random"] for i in range(6)]) >= 0.2


def test_profile_explanations_scored_without_an_llm_become_current(planted: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = str(planted)
    config = ExplainConfig.model_validate({"examples": EXAMPLES, "scorers": ["embedding"], "kinds": ["profile"]})
    summary = run_explain(url, PLANTED, latents=list(range(6)), config=config)
    assert (summary.made, summary.unparsed, summary.prompt_tokens) == (6, 0, 0)
    latents = actstore.open(url).sae(PLANTED)
    table = latents.explanations()
    assert set(table["kind"]) == {"profile"} and set(table["author"]) == {"token-profile"}
    assert table["baseline_text"].null_count() == 0 and (table["baseline_latent"] != table["latent"]).all()
    informative = table.filter(pl.col("embedding_informative"))
    assert informative.height >= 5 and (informative["embedding_auroc"] > informative["embedding_baseline"]).all()
    current = latents.explanations(current=True)
    assert current["kind"].to_list() == ["profile"] * 6 and current["score"].null_count() == 6 - informative.height
    assert run_explain(url, PLANTED, latents=list(range(6)), config=config).made == 0  # cached by key
    capsys.readouterr()
    assert main(["explanations", url, "--sae", PLANTED]) == 0
    out = capsys.readouterr().out
    assert "embedding" in out and ('the token " brown"' in out)


@pytest.mark.slow
@pytest.mark.timeout(900)  # SmolLM2 on a Ray actor; slow on a loaded CPU
def test_smollm2_explains_two_planted_latents_in_one_run(planted: Path) -> None:
    """The local explainer, given the windows and the token profile as evidence, names both
    planted words (on 4 of the 6 it does; on the other two it copies a few-shot answer, which is
    recorded as unparsed: docs/explain.md "Figures"), and the embedding scorer ranks each answer
    above its shuffled baseline."""
    url = str(planted)
    config = ExplainConfig.model_validate({
        "examples": {**EXAMPLES, "top": 3, "window": 6, "test_per_bin": 2, "negatives": 4}, "kinds": ["auto"],
        "scorers": ["embedding"], "sampling": {"max_new_tokens": 20}})
    summary = run_explain(url, PLANTED, latents=[0, 2], config=config)
    assert (summary.made, summary.unparsed) == (2, 0)
    rows = actstore.open(url).sae(PLANTED).explanations().filter(pl.col("kind") == "auto").sort("latent")
    first, second = rows["text"].to_list()
    assert first != second and WORDS[0] in first and WORDS[2] in second, (first, second)
    assert rows["embedding_informative"].all() and (rows["embedding_auroc"] > rows["embedding_baseline"]).all()
