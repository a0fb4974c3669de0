"""Contrasts of document sets on a store with planted truths (tests/contrast/conftest.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import actstore
from actstore.cli import main
from actstore.contrast import documents
from actstore.contrast.documents import CONTRAST_SCHEMA
from actstore.errors import ConfigError
from tests.contrast.conftest import DOCS_PER_TOPIC, MARKER, ONE_DOC, SAE


def test_planted_latents_rank_as_planted(contrast_store: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(documents, "LATENT_CHUNK", 8)  # the statistics in several chunks of latents, as on a large SAE
    latents = actstore.open(str(contrast_store)).sae(SAE)
    latents.label(MARKER, "the word <b>autoencoder</b>", author="test")
    found = latents.contrast("topic = 'a'", "topic = 'b'")
    frame = found.frame
    assert frame.schema == CONTRAST_SCHEMA and frame.height == latents.info.d_sae
    top = frame.row(0, named=True)
    assert top["latent"] == MARKER and top["q"] < 0.01 and top["label"] == "the word <b>autoencoder</b>"
    assert top["rate_b"] == 0 and top["units_a"] == DOCS_PER_TOPIC and top["ci_low"] > 2
    one = frame.filter(pl.col("latent") == ONE_DOC).row(0, named=True)
    assert one["count_a"] >= 30 and one["units_a"] == 1 and one["q"] > 0.05 and one["ci_low"] < 0 < one["ci_high"]
    assert found.unit == "document" and (found.a.documents, found.b.documents) == (DOCS_PER_TOPIC, DOCS_PER_TOPIC)
    assert found.a.tokens + found.b.tokens == int(latents._stats(("tokens",))["tokens"].reshape(-1)[0])
    # B left out: all other documents, the same answer
    rest = latents.contrast(pl.col("topic") == "a")
    assert rest.b.where.startswith("NOT (") and rest.b.documents == DOCS_PER_TOPIC
    assert rest.frame.drop("label").equals(frame.drop("label"))
    # the CLI: the same frame as JSON, and a table naming the unit and the test
    url = str(contrast_store)
    assert main(["contrast", url, "--sae", SAE, "--a", "topic = 'a'", "--b", "topic = 'b'", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(found.to_dict(top=20)))  # --top 20 by default
    assert main(["contrast", url, "--sae", SAE, "--a", "topic = 'a'", "--top", "3"]) == 0
    text = capsys.readouterr().out
    assert "unit: document" in text and "Mann-Whitney" in text and "autoencoder" in text
    # refused before any work: overlapping sides, an unknown column, bad syntax, a subquery
    for a, b, message in (("topic = 'a'", "n < 3", "share"), ("topik = 'a'", None, "unknown columns ['topik']"),
                          ("topic = ", None, "not a SQL WHERE clause"), ("doc IN (SELECT 1)", None, "subquery")):
        with pytest.raises(ConfigError, match=re.escape(message)) as err:
            latents.contrast(a, b)
        assert "\n" not in str(err.value) and ("topic" in str(err.value) or message == "share")
    assert main(["contrast", url, "--sae", SAE, "--a", "topik = 'a'"]) == 2
    assert "topik" in capsys.readouterr().err


def test_random_splits_of_one_topic_make_no_discoveries(contrast_store: Path) -> None:
    """Topic a against itself, split at random by documents: no latent with q < 0.05 in 20 seeds."""
    latents = actstore.open(str(contrast_store)).sae(SAE)
    docs = latents.select_documents("topic = 'a'").docs
    smallest = []
    for seed in range(20):
        half = np.random.default_rng(seed).permutation(docs)[: docs.size // 2]
        found = latents.contrast(pl.col("doc").is_in(half.tolist()), (pl.col("topic") == "a") & ~pl.col("doc").is_in(half.tolist()))
        assert found.unit == "document"
        smallest.append(float(found.frame["q"].min()))
    assert min(smallest) >= 0.05, smallest
