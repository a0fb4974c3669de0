"""Document filters: placement of documents on the token axis, and every query over a filtered
set against plain numpy over the dense codes of the shared coded store."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import actstore
from actstore.cli import main
from actstore.corpus.packing import PackPlan, fill_contexts
from actstore.errors import ConfigError
from actstore.neuronpedia import export_neuronpedia
from actstore.query import latents as query_latents
from actstore.query.filters import DocumentLayout
from actstore.store.stats import HIST_EDGES
from tests.coded_store import SAE
from tests.query.test_latents import _mid_latent, dense  # noqa: F401  (a fixture)

WHERE = "doc % 3 = 1"


@pytest.mark.parametrize("packing", ["pack", "document"])
def test_layout_places_documents_as_packing_does(packing: str) -> None:
    """doc_of and contexts from the lengths alone agree with the token arrays ingestion fills."""
    rng = np.random.default_rng(0)
    for sep in (None, 1):
        lengths = rng.integers(1, 40, 30)
        plan = PackPlan(ctx_len=16, packing=packing, sep_id=sep, bos_id=2, pad_id=0, doc_file=np.zeros(30, np.int32),  # type: ignore[arg-type]
                        doc_offset=np.zeros(30, np.int64), doc_len=lengths)
        doc = fill_contexts(plan, 0, plan.n_ctx, lambda f, a, b: np.full(b - a, 7, np.int32))["doc"]
        layout = DocumentLayout(plan, pl.DataFrame())
        assert np.array_equal(layout.doc_of(np.arange(doc.size)).reshape(doc.shape), doc)
        chosen = np.sort(rng.choice(30, 7, replace=False))
        assert np.array_equal(layout.contexts(chosen), np.flatnonzero(np.isin(doc, chosen).any(1)))


def test_filters_resolve_or_fail_in_one_line(coded_store: Path, dense) -> None:  # noqa: F811
    store = actstore.open(str(coded_store))
    docs = store.select_documents(WHERE)
    member = np.isin(dense["doc"], docs.docs) & dense["counted"]
    assert docs.tokens == member.sum() and np.array_equal(docs.docs, np.arange(1, docs.docs.max() + 1, 3))
    assert np.array_equal(docs.contains(np.arange(member.size)), member)  # also against the stored token arrays
    assert np.array_equal(store.select_documents(pl.col("doc") % 3 == 1).docs, docs.docs)
    columns = store.documents().collect_schema().names()
    for bad, why in (("dok = 1", "unknown columns ['dok']"), ("doc =", "not a SQL WHERE clause"),
                     ("source", "cannot be applied"), ("doc IN (SELECT 1 FROM read_csv('/etc/hostname'))", "subquery"),
                     (pl.col("nope") > 1, "unknown columns ['nope']")):
        with pytest.raises(ConfigError, match=re.escape(why)) as err:
            store.select_documents(bad)
        assert "\n" not in str(err.value) and str(columns) in str(err.value)
    assert store.select_documents("source LIKE '%select%'").docs.size == 0  # the word inside a string is no subquery


def test_filtered_queries_match_numpy(coded_store: Path, dense, tmp_path: Path,  # noqa: F811
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(query_latents, "FIRST_BLOCK", 2)  # filtered top-k reads the posting list in several blocks
    latents = actstore.open(str(coded_store)).sae(SAE)
    docs = latents.select_documents(WHERE)
    assert docs is not None
    member = np.isin(dense["doc"], docs.docs) & dense["counted"]
    codes = np.where(member[:, None], dense["codes"], 0)
    ctx_len = latents.store.meta.ctx_len
    # statistics over the set, and over everything through a filter matching all
    got = latents.density(where=WHERE)
    assert got["count"].to_list() == (codes > 0).sum(0).tolist()
    assert np.allclose(got["density"].to_numpy(), (codes > 0).sum(0) / member.sum())
    assert np.allclose(got["max"].to_numpy(), codes.max(0))
    everything, merged = latents.density(where="TRUE"), latents.density()
    assert everything.drop("mean", "max", "hist").equals(merged.drop("mean", "max", "hist"))
    # the filtered statistics read the codes' stored values (bfloat16), the merged ones were
    # computed from the SAE's float32 output: within bfloat16's rounding, a value near a bin edge
    # in the neighbouring bin
    for column in ("mean", "max"):
        assert np.allclose(everything[column].to_numpy(), merged[column].to_numpy(), rtol=2**-8, atol=0)
    stored = np.searchsorted(HIST_EDGES, dense["codes"], side="right")
    assert everything["hist"].to_list() == [np.bincount(stored[:, j][dense["codes"][:, j] > 0], minlength=HIST_EDGES.size + 1).tolist()
                                            for j in range(stored.shape[1])]
    assert (np.array(everything["hist"].to_list()).sum(1) == np.array(merged["hist"].to_list()).sum(1)).all()
    # one latent's examples: the posting list filtered, or the set's codes scanned, agree
    latent = _mid_latent(dense)
    col = codes[:, latent]
    order = sorted(np.flatnonzero(col).tolist(), key=lambda t: (-col[t], t))
    scanned = latents._scan_postings(latent, docs)
    assert scanned[0].tolist() == latents._postings_in(latent, docs)[0].tolist() == order
    assert scanned[1].tolist() == col[order].tolist()
    every = latents.top_k(latent, k=5, per_doc=None, where=WHERE)
    assert (every["ctx"] * ctx_len + every["pos"]).to_list() == order[:5]
    per_doc = [t for i, t in enumerate(order) if dense["doc"][t] not in {dense["doc"][u] for u in order[:i]}]
    first = latents.top_k(latent, k=5, window=2, per_doc=1, where=WHERE)  # one per document
    assert (first["ctx"] * ctx_len + first["pos"]).to_list() == per_doc[:5]
    cut = float(np.median(col[col > 0]))
    assert sorted(latents.occurrences(latent, min_value=cut, where=WHERE)["token"].to_list()) == \
        np.flatnonzero(col >= np.float32(cut)).tolist()
    quantiles = latents.quantile_examples(latent, bins=3, per_bin=2, where=WHERE)
    assert quantiles.unique("bin")["bin_count"].sum() == int((col > 0).sum()) and set(quantiles["doc"]) <= set(docs.docs)
    # co-firing within the set
    on = codes > 0
    together = (on & on[:, [latent]]).sum(0)
    together[latent] = 0
    jaccard = together / np.maximum(on[:, latent].sum() + on.sum(0) - together, 1)
    expected = sorted(np.flatnonzero(together), key=lambda i: (-jaccard[i], -together[i], i))[:8]
    assert latents.cofiring(latent, top=8, where=WHERE)["latent"].to_list() == expected
    # a span holding several documents: only the set's tokens count
    ctx = int(np.flatnonzero(np.array([len(set(dense["doc"][c * ctx_len:(c + 1) * ctx_len]) - {-1}) > 1
                                       for c in range(member.size // ctx_len)]))[0])
    span = np.arange(ctx * ctx_len, (ctx + 1) * ctx_len)
    ref = codes[span].max(0)
    assert set(latents.features_at(ctx=ctx, top=500, where=WHERE)["latent"].to_list()) == set(np.flatnonzero(ref).tolist())
    # text search and search by example inside the set
    ids = dense["ids"]
    flat = int(np.flatnonzero(member)[5])
    text_ids = ids[flat : flat + 2].tolist()
    places = [t for t in range(ids.size - 1) if ids[t:t + 2].tolist() == text_ids and member[t] and member[t + 1]
              and t // ctx_len == (t + 1) // ctx_len]
    found = latents.store.find_tokens(text_ids, limit=None, where=WHERE)
    assert (found["ctx"] * ctx_len + found["pos"]).to_list() == places
    assert latents.search_by_example("the", where=WHERE).height > 0
    assert latents.search_by_example("the", where="doc < 0").is_empty()  # a set without documents
    # the Neuronpedia export: examples from the set only
    summary = export_neuronpedia(latents, [latent], tmp_path, model_id="tiny", source_id="1-res", where=WHERE)
    with gzip.open(summary.folder / "activations/batch-0.jsonl.gz", "rt") as f:
        shown = {int(json.loads(line)["dataIndex"].split()[1]) for line in f}
    assert shown and shown <= set(docs.docs.tolist())


def test_cli_takes_where(coded_store: Path, dense, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    url, latent = str(coded_store), _mid_latent(dense)
    assert main(["top", url, "--sae", SAE, "--latent", str(latent), "--k", "3", "--where", WHERE, "--json"]) == 0
    docs = {row["doc"] for row in json.loads(capsys.readouterr().out)}
    assert docs and all(d % 3 == 1 for d in docs)
    assert main(["density", url, "--sae", SAE, "--latent", str(latent), "--where", WHERE, "--json"]) == 0
    member = np.isin(dense["doc"], np.arange(1, 1000, 3)) & dense["counted"]
    assert json.loads(capsys.readouterr().out)[0]["count"] == int(((dense["codes"][:, latent] > 0) & member).sum())
    assert main(["find", url, "the", "--where", "doc < 2", "--json"]) == 0
    assert {row["doc"] for row in json.loads(capsys.readouterr().out)} <= {0, 1}
    assert main(["cofiring", url, "--sae", SAE, "--latent", str(latent), "--where", "dok = 1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unknown columns ['dok']" in err and "n_tokens" in err
