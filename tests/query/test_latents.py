"""The query API against plain numpy over the dense codes of the shared coded store."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import ml_dtypes
import numpy as np
import polars as pl
import pytest

import actstore
from actstore.cli import main
from actstore.query.latents import COFIRING_SCHEMA, DENSITY_SCHEMA, OCCURRENCE_SCHEMA, SPAN_SCHEMA
from actstore.query.windows import WINDOW_SCHEMA, decode_tokens
from actstore.store.layout import FLAG_BOS, FLAG_PAD
from tests.coded_store import SAE


@pytest.fixture(scope="module")
def dense(coded_store: Path) -> dict[str, np.ndarray]:
    """Dense codes [tokens, d_sae] (0 on BOS/padding), doc and ids per flat token."""
    store = actstore.open(str(coded_store))
    ids = store.read(f"codes/{SAE}/latent", slice(None)).reshape(-1, 20)
    val = store.read(f"codes/{SAE}/value", slice(None)).reshape(-1, 20).astype(np.float32)
    flags = store.read("tokens/flags", slice(None)).reshape(-1)
    counted = (flags & (FLAG_BOS | FLAG_PAD)) == 0
    out = np.zeros((ids.shape[0], store.sae(SAE).info.d_sae), np.float32)
    rows = np.repeat(np.arange(ids.shape[0]), 20)
    ok = (np.arange(20) < store.read(f"codes/{SAE}/l0", slice(None)).reshape(-1, 1)).reshape(-1)  # slots below the L0
    out[rows[ok], ids.reshape(-1)[ok]] = val.reshape(-1)[ok]
    out[~counted] = 0
    return {"codes": out, "counted": counted, "doc": store.read("tokens/doc", slice(None)).reshape(-1),
            "ids": store.read("tokens/ids", slice(None)).reshape(-1)}


@pytest.fixture(scope="module")
def latents(coded_store: Path):
    return actstore.open(str(coded_store)).sae(SAE)


def _mid_latent(dense) -> int:
    counts = (dense["codes"] > 0).sum(0)
    return int(np.argsort(counts)[len(counts) // 2])


def test_top_k_agrees_with_numpy(latents, dense) -> None:
    latent = _mid_latent(dense)
    col = dense["codes"][:, latent]
    order = sorted(np.flatnonzero(col).tolist(), key=lambda t: (-col[t], t))
    seen, expected = set(), []
    for t in order:  # one example per document
        if dense["doc"][t] not in seen:
            seen.add(dense["doc"][t])
            expected.append(t)
    top = latents.top_k(latent, k=6, window=3, per_doc=1)
    assert top.schema == pl.Schema({"rank": pl.Int64, **WINDOW_SCHEMA})
    ctx_len = latents.store.meta.ctx_len
    assert (top["ctx"] * ctx_len + top["pos"]).to_list() == expected[:6]
    assert top["value"].to_list() == col[expected[:6]].tolist()
    for row in top.iter_rows(named=True):  # the window's values are the latent on each shown token
        flat = row["ctx"] * ctx_len + row["pos"]
        assert row["token_ids"][row["focus"]] == dense["ids"][flat]
        assert row["values"][row["focus"]] == col[flat]
        assert max(row["values"]) <= row["value"] or row["rank"] > 0
    every = latents.top_k(latent, k=6)  # the true top k by default
    assert (every["ctx"] * ctx_len + every["pos"]).to_list() == order[:6]


def test_occurrences_threshold_and_limit(latents, dense) -> None:
    latent = _mid_latent(dense)
    col = dense["codes"][:, latent]
    cut = float(np.median(col[col > 0]))
    occ = latents.occurrences(latent, min_value=cut)
    assert occ.schema == pl.Schema(OCCURRENCE_SCHEMA)
    assert sorted(occ["token"].to_list()) == np.flatnonzero(col >= np.float32(cut)).tolist()
    assert latents.occurrences(latent, limit=3)["value"].to_list() == sorted(col[col > 0].tolist(), reverse=True)[:3]


@pytest.mark.parametrize("kind", ["count", "width"])
def test_quantile_bins_hold_the_right_counts(latents, dense, kind) -> None:
    latent = _mid_latent(dense)
    values = np.sort(dense["codes"][:, latent][dense["codes"][:, latent] > 0])
    got = latents.quantile_examples(latent, bins=4, per_bin=3, kind=kind, window=2)
    counts = got.unique("bin").sort("bin")["bin_count"].to_list()
    if kind == "count":
        assert counts == [len(p) for p in np.array_split(values, 4)]
    else:
        edges = np.linspace(values[0], values[-1], 5)
        assert counts == [c for c in np.histogram(values, edges)[0].tolist() if c]
    assert (got["value"] >= got["bin_min"]).all() and (got["value"] <= got["bin_max"]).all()
    assert got.group_by("bin").len()["len"].max() <= 3


def test_density_matches_dense_codes(latents, dense) -> None:
    got = latents.density()
    assert got.schema == pl.Schema(DENSITY_SCHEMA)
    fired = (dense["codes"] > 0).sum(0)
    assert int(np.asarray(latents.store.array(f"stats/saes/{SAE}/over_cap")[...]).sum()) == 0  # so codes hold every latent
    assert got["count"].to_list() == fired.tolist()
    assert np.allclose(got["density"].to_numpy(), fired / dense["counted"].sum())
    # statistics come from the float32 codes; the stored values are those rounded to bfloat16
    assert np.array_equal(got["max"].to_numpy().astype(ml_dtypes.bfloat16).astype(np.float32), dense["codes"].max(0))
    assert latents.density(5).row(0, named=True)["count"] == fired[5]


def test_features_at_ranks_a_span(latents, dense) -> None:
    ctx_len = latents.store.meta.ctx_len
    flat = np.arange(7 * ctx_len + 2, 7 * ctx_len + 9)
    for agg in ("max", "sum"):
        got = latents.features_at(ctx=7, span=(1, 8), agg=agg, top=5)
        assert got.schema == pl.Schema(SPAN_SCHEMA)
        ref = getattr(dense["codes"][flat], agg)(0)
        assert got["latent"].to_list() == sorted(np.flatnonzero(ref), key=lambda i: (-ref[i], i))[:5]
        assert np.allclose(got["value"].to_numpy(), ref[got["latent"].to_numpy()])
    sparse = latents.features_at(ctx=7, max_density=0.5, top=50)
    assert (sparse["density"] <= 0.5).all()
    doc = int(dense["doc"][flat[0]])
    by_doc = latents.features_at(doc=doc, top=500)
    doc_tokens = np.flatnonzero((dense["doc"] == doc) & dense["counted"])
    assert set(by_doc["latent"].to_list()) == set(np.flatnonzero(dense["codes"][doc_tokens].max(0)).tolist())


def test_cofiring_agrees_with_brute_force(latents, dense) -> None:
    latent = _mid_latent(dense)
    on = dense["codes"] > 0
    together = (on & on[:, [latent]]).sum(0)
    together[latent] = 0
    jaccard = together / np.maximum(on[:, latent].sum() + on.sum(0) - together, 1)
    got = latents.cofiring(latent, top=10)
    assert got.schema == pl.Schema(COFIRING_SCHEMA)
    expected = sorted(np.flatnonzero(together), key=lambda i: (-jaccard[i], -together[i], i))[:10]
    assert got["latent"].to_list() == expected
    assert got["together"].to_list() == together[expected].tolist()


def test_find_tokens_finds_every_place(coded_store: Path, dense) -> None:
    store = actstore.open(str(coded_store))
    ids, ok, ctx_len = dense["ids"], dense["counted"], store.meta.ctx_len
    seq = ids[ctx_len + 3 : ctx_len + 5].tolist()
    expected = [t for t in range(ids.size - 1) if (t % ctx_len) < ctx_len - 1 and ids[t : t + 2].tolist() == seq and ok[t : t + 2].all()]
    got = store.find_tokens(seq, limit=None, window=2)
    assert (got["ctx"] * ctx_len + got["pos"]).to_list() == expected
    assert all(r["token_ids"][r["focus"] : r["focus"] + 1] == seq[:1] for r in got.iter_rows(named=True))


def test_cli_at_shows_the_span_text(coded_store: Path, dense, capsys) -> None:
    store = actstore.open(str(coded_store))
    ctx_len = store.meta.ctx_len
    counted = np.flatnonzero(dense["counted"][2 * ctx_len : 3 * ctx_len])
    expected = "".join(decode_tokens(store, dense["ids"][2 * ctx_len + counted[1:4]].tolist()))
    assert main(["at", str(coded_store), "--sae", SAE, "--ctx", "2", "--span", "1:4"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"ctx 2 span 1:4: {json.dumps(expected)}"


def test_cli_top_highlights_and_exports(coded_store: Path, dense, capsys, tmp_path: Path) -> None:
    latent = _mid_latent(dense)
    assert main(["top", str(coded_store), "--sae", SAE, "--latent", str(latent), "--k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all("[[" in line and "]]" in line for line in lines)
    assert main(["top", str(coded_store), "--sae", SAE, "--latent", str(latent), "--k", "3", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3
    for verb in (["density"], ["at", "--ctx", "2"], ["cofiring", "--latent", str(latent)]):
        assert main([verb[0], str(coded_store), "--sae", SAE, *verb[1:]]) == 0
    assert main(["top", str(coded_store), "--sae", SAE, "--latent", "100000"]) == 2
    capsys.readouterr()
    out = tmp_path / "np"
    assert main(["export", str(coded_store), "--sae", SAE, "--latents", f"{latent},3", "--out", str(out),
                 "--model-id", "tiny-gemma2", "--source-id", "1-res"]) == 0
    with gzip.open(out / "tiny-gemma2/1-res/features/batch-0.jsonl.gz", "rt") as f:
        features = [json.loads(line) for line in f]
    with gzip.open(out / "tiny-gemma2/1-res/activations/batch-0.jsonl.gz", "rt") as f:
        acts = [json.loads(line) for line in f]
    assert [f["index"] for f in features] == [str(latent), "3"] and features[0]["modelId"] == "tiny-gemma2"
    assert {a["index"] for a in acts} == {str(latent), "3"}
    assert all(len(a["tokens"]) == len(a["values"]) and a["values"][a["maxValueTokenIndex"]] == a["maxValue"] for a in acts)
