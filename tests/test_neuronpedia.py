"""The Neuronpedia export as Neuronpedia's importer would load it (tests/query/neuronpedia_rules.py)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import actstore
from actstore.errors import ConfigError
from actstore.neuronpedia import DEFAULT_CREATOR_ID, export_neuronpedia
from tests.coded_store import SAE
from tests.query import neuronpedia_rules as rules


@pytest.fixture(scope="module")
def exported(coded_store: Path, tmp_path_factory: pytest.TempPathFactory):
    latents = actstore.open(str(coded_store)).sae(SAE)
    counts = latents.counts()
    chosen = [int(np.argmax(counts)), int(np.argsort(counts)[len(counts) // 2]), int(np.argmin(counts))]
    explanations = pl.DataFrame({"latent": [chosen[0], chosen[0], chosen[1]], "text": ["the word 'the'", "articles", "code"],
                                 "kind": ["label", "auto", "auto"], "author": ["me", "smollm2", "smollm2"],
                                 "scores": [None, {"detection": 0.8}, {"detection": 0.6}]})
    summary = export_neuronpedia(latents, chosen, tmp_path_factory.mktemp("np"), model_id="tiny-gemma2",
                                 source_id="1-res-96", k=5, window=4, quantile_bins=4, per_bin=2, explanations=explanations)
    return summary, latents, chosen


def test_the_importer_keeps_every_row(exported) -> None:
    summary, latents, chosen = exported
    assert summary.folder.parts[-2:] == ("tiny-gemma2", "1-res-96")
    db, problems = rules.simulate_import(summary.folder)
    assert problems == []
    kept = {"model.jsonl": "Model", "sourceset.jsonl": "SourceSet", "source.jsonl": "Source", "features/batch-0.jsonl.gz": "Neuron",
            "activations/batch-0.jsonl.gz": "Activation", "explanations/batch-0.jsonl.gz": "Explanation"}
    assert {name: len(db[table]) for name, table in kept.items()} == summary.rows
    assert summary.rows["explanations/batch-0.jsonl.gz"] == 3 and summary.rows["features/batch-0.jsonl.gz"] == 3
    assert rules.value_conventions(db) == []
    # what the pages show: a bar histogram over [0, max] holding every occurrence, fractions per interval
    neuron = next(n for n in db["Neuron"] if n["index"] == str(chosen[0]))
    assert sum(neuron["freq_hist_data_bar_heights"]) == latents.counts()[chosen[0]]
    samples = [a for a in db["Activation"] if a["index"] == str(chosen[0]) and a["binContains"] != -1]
    assert samples and all(0 < a["binContains"] <= 1 for a in samples)
    assert all(a["creatorId"] == DEFAULT_CREATOR_ID for a in db["Activation"])


def test_the_rules_catch_what_the_importer_drops(exported, tmp_path: Path) -> None:
    summary, _, _ = exported
    broken = tmp_path / "m" / "s"
    for path in summary.folder.rglob("*.jsonl*"):
        (broken / path.relative_to(summary.folder)).parent.mkdir(parents=True, exist_ok=True)
        (broken / path.relative_to(summary.folder)).write_bytes(path.read_bytes())
    acts = broken / "activations/batch-0.jsonl.gz"
    with gzip.open(acts, "rt") as f:
        lines = [json.loads(line) for line in f]
    first = {k: v for k, v in lines[0].items() if k not in {"binMin", "binMax", "binContains"}}  # yesterday's top examples
    with gzip.open(acts, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in [first, *lines[1:], lines[1]])
    _, problems = rules.simulate_import(broken)
    assert any("keys differ from the first line" in p for p in problems) and any("repeats" in p for p in problems)
    (broken / "source.jsonl").unlink()
    db, problems = rules.simulate_import(broken)
    assert db["Neuron"] == [] and any("source.jsonl is missing" in p for p in problems)
    _, problems = rules.simulate_import(summary.folder, users={"someone-else"})
    assert any("not a user" in p for p in problems)


def test_ids_neuronpedia_would_refuse_are_refused_first(coded_store: Path, tmp_path: Path) -> None:
    latents = actstore.open(str(coded_store)).sae(SAE)
    for model_id, source_id in (("Tiny Gemma", "1-res"), ("tiny", "res")):
        with pytest.raises(ConfigError, match="source id"):
            export_neuronpedia(latents, [0], tmp_path, model_id=model_id, source_id=source_id)
    assert not any(tmp_path.iterdir())


def test_the_stores_own_labels_are_exported(coded_store: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "store"
    shutil.copytree(coded_store, copy)
    latents = actstore.open(str(copy)).sae(SAE)
    latent = int(np.argmax(latents.counts()))
    latents.label(latent, "the most frequent latent", author="ann")
    summary = export_neuronpedia(latents, [latent], tmp_path / "np", model_id="tiny-gemma2", source_id="1-res-96",
                                 k=3, window=4, quantile_bins=2, per_bin=1)
    db, problems = rules.simulate_import(summary.folder)
    assert problems == []
    [row] = db["Explanation"]
    assert row["description"] == "the most frequent latent" and row["index"] == str(latent)
    assert row["notes"] == "human by ann"
