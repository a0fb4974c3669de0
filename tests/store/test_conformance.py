"""The store as an independent reader sees it: ``spec_reader`` follows STORE.md with zarr,
numpy and pyarrow only; here its view of two stores is checked against the spec (every array
and group named, declared dtype, shape, attributes and codecs, nothing left unnamed) and its
decoded values against what actstore's own API returns. The shared coded store has a float32
site (shuffle-zstd); the full store adds a bfloat16 site (shuffle-zstd), a float32 site with
plain zstd and the SAE's output logits."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import actstore
from actstore.store.codes import read_codes
from tests.coded_store import SAE, SITE, build_coded_store
from tests.helpers import sample_records
from tests.store import spec_reader as spec

SITE0 = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def full_store(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: Path, ray_cluster: None) -> Path:
    """A small coded store whose SAE reads a bfloat16 site, with a second site compressed with
    zstd, the SAE's output logits kept (``actstore logits``) and an explanations table (two
    labels and a scored automatic explanation)."""
    from actstore.cli import main
    from actstore.explain.table import append_explanations

    sites = [{"name": SITE, "dtype": "bfloat16"}, {"name": SITE0, "dtype": "float32", "compression": "zstd"}]
    path = build_coded_store(tmp_path_factory.mktemp("full"), tiny_tokenizer, records=sample_records(12, seed=3), sites=sites)
    assert main(["logits", str(path)]) == 0
    latents = actstore.open(str(path)).sae(SAE)
    latents.label(3, "a <b>label</b>", author="spec")
    latents.label(3, "a better label", author="spec")
    append_explanations(latents.store, SAE, [{"latent": 5, "text": "commas", "kind": "auto", "author": "smollm2",
                                              "parsed": True, "explainer_examples": [1, 2], "key": "k5",
                                              "created": "2026-11-23T12:00:00+00:00", "detection_balanced_accuracy": 0.75,
                                              "detection_n": 8}])
    _old_part(path / f"explanations/{SAE}")
    return path


def _old_part(folder: Path) -> None:
    """A part as actstore wrote it before the embedding scorer and the checks: fewer columns."""
    import hashlib
    import io
    import json

    import polars as pl

    frame = pl.DataFrame({"latent": [7], "text": ["an older explanation"], "kind": ["auto"], "author": ["smollm2"],
                          "template_hash": ["0" * 16], "sampling": ["{}"], "explainer_examples": [[1]], "test_examples": [[2]],
                          "negative_examples": [[3]], "parsed": [True], "raw": ["an older explanation"], "key": ["old7"],
                          "created": ["2026-11-01T12:00:00+00:00"], "detection_balanced_accuracy": [0.5], "detection_n": [4]})
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    part = "f" * 32
    (folder / f"part-{part}.parquet").write_bytes(buffer.getvalue())
    (folder / f"_committed/{part}.json").write_text(json.dumps({
        "part": f"part-{part}.parquet", "rows": 1, "sha256": hashlib.sha256(buffer.getvalue()).hexdigest(),
        "created": "2026-11-01T12:00:00+00:00"}))


@pytest.fixture(params=["coded_store", "full_store"])
def store_path(request: pytest.FixtureRequest) -> Path:
    return Path(request.getfixturevalue(request.param))


def test_the_reader_does_not_import_actstore() -> None:
    tree = ast.parse(Path(spec.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {m for m in imported if m.split(".")[0] in {"actstore", "tests"}}, imported


def test_every_object_is_in_the_spec_with_its_declared_dtype(coded_store: Path, full_store: Path) -> None:
    checked = spec.check_store(coded_store)
    assert {"tokens/ids", f"activations/{SITE}", f"codes/{SAE}/value", f"stats/saes/{SAE}/hist", f"index/{SAE}/b00000/token_gap"} <= set(checked)
    assert checked[f"stats/saes/{SAE}/hist"] == ("int64", "int64") and checked[f"stats/saes/{SAE}/units/hist"] == ("int32", "int32")
    full = spec.check_store(full_store)
    assert full[f"activations/{SITE}"] == ("uint16", "bfloat16") and full[f"activations/{SITE0}"] == ("float32", "float32")
    assert {f"logits/{SAE}/{name}" for name in spec.LOGITS} <= set(full)


def test_an_object_the_spec_does_not_name_is_reported(coded_store: Path, tmp_path: Path) -> None:
    import shutil

    import zarr

    copy = tmp_path / "s"
    shutil.copytree(coded_store, copy, ignore=shutil.ignore_patterns("index", "codes", "_manifests"))
    (copy / "_manifests").mkdir()
    zarr.create_array(str(copy / "stats/extra"), shape=(2,), dtype="int8")
    (copy / "tokenizer/tokenizer.json").write_text((copy / "tokenizer/tokenizer.json").read_text() + " ")
    with pytest.raises(AssertionError) as err:
        spec.check_store(copy)
    assert "stats/extra/zarr.json" in str(err.value) and f"codes/{SAE}/latent: missing" in str(err.value)
    assert "tokenizer/tokenizer.json: SHA-256" in str(err.value)


def test_decoded_values_equal_actstore(store_path: Path) -> None:
    store = actstore.open(str(store_path))
    meta = spec.root_metadata(store_path)
    assert spec.done_units(store_path, "extract") == store.units_done("extract") == list(range(meta["n_units"]))
    tokens = store.tokens(slice(None))
    for name in spec.TOKENS:
        assert np.array_equal(spec.read(store_path, f"tokens/{name}"), tokens[name])
    paths = [f"activations/{site['name']}" for site in meta["sites"]] + [f"codes/{SAE}/l0"]
    for path in paths:
        ours, theirs = spec.read(store_path, path), store.read(path, slice(None))
        assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs), path
    ids, values = spec.codes(store_path, SAE, meta["format_version"])
    codes = read_codes(store, SAE, slice(None))
    assert ids.dtype == codes.idx.dtype and np.array_equal(ids, codes.idx) and (ids >= 0).any() and (ids < 0).any()
    assert values.dtype == codes.val.dtype and np.array_equal(values, codes.val)
    for path in [p for p in spec.check_store(store_path) if p.startswith("stats/")]:
        ours, theirs = spec.read(store_path, path), store.read(path, slice(None))
        assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs), path  # merged hist read as int64 rows
    docs = spec.documents(store_path)
    frame = store.documents().collect()
    assert docs.column_names[: len(frame.columns)] == frame.columns
    assert docs.column("doc").to_pylist() == frame["doc"].to_list() and docs.column("n_tokens").to_pylist() == frame["n_tokens"].to_list()


def test_logits_and_tokenizer_decode_as_the_spec_says(full_store: Path) -> None:
    latents = actstore.open(str(full_store)).sae(SAE)
    meta = spec.root_metadata(full_store)
    tok = spec.tokenizer(full_store, meta)
    kept = spec.logits_saes(full_store, meta)[SAE]
    assert kept["k"] == 10 and kept["sae_sha256"] == meta["saes"][0]["sha256"]
    arrays = {name: spec.read(full_store, f"logits/{SAE}/{name}") for name in spec.LOGITS}
    assert (np.diff(arrays["top_values"], axis=1) <= 0).all() and (np.diff(arrays["bottom_values"], axis=1) >= 0).all()
    for latent in (0, 7):
        frame = latents.logits(latent)
        for side in ("top", "bottom"):
            rows = frame.filter(side=side)
            assert rows["token_id"].to_list() == arrays[f"{side}_ids"][latent].tolist()
            assert np.array_equal(rows["value"].to_numpy(), arrays[f"{side}_values"][latent])
            assert rows["token"].to_list() == [tok.decode([int(i)], skip_special_tokens=False) for i in rows["token_id"]]


def test_explanations_decode_as_the_spec_says(full_store: Path) -> None:
    ours = spec.explanations(full_store, SAE).to_pylist()
    theirs = actstore.open(str(full_store)).sae(SAE).explanations().to_dicts()
    assert sorted(ours, key=lambda r: r["key"]) == sorted(theirs, key=lambda r: r["key"]) and len(ours) == 4
    older = next(r for r in theirs if r["key"] == "old7")  # a part from before the checks: read, never scored
    assert older["detection_balanced_accuracy"] == 0.5 and older["detection_informative"] is None
    current = actstore.open(str(full_store)).sae(SAE).explanations(current=True)
    assert current.filter(latent=7)["score"].item() is None


def test_statistics_and_index_decode_as_the_spec_says(store_path: Path) -> None:
    latents = actstore.open(str(store_path)).sae(SAE)
    read = lambda p: spec.read(store_path, p)  # noqa: E731
    for name in spec.SAE_STATS:  # merged = units summed (max: maximum)
        rows = read(f"stats/saes/{SAE}/units/{name}")
        merged = rows.max(0) if name == "max" else rows.sum(0)
        assert np.array_equal(read(f"stats/saes/{SAE}/{name}").reshape(merged.shape), merged), name
    density = latents.density()
    assert np.array_equal(density["count"].to_numpy(), read(f"stats/saes/{SAE}/fired"))
    assert np.array_equal(np.stack(density["hist"].to_list()), read(f"stats/saes/{SAE}/hist"))
    assert np.array_equal(density["max"].to_numpy(), read(f"stats/saes/{SAE}/max"))
    flags = read("tokens/flags").reshape(-1)
    x = read(f"activations/{SITE}").reshape(flags.size, -1).astype(np.float64)[(flags & 5) == 0]
    np.testing.assert_allclose(read(f"stats/sites/{SITE}/sum"), x.sum(0), rtol=1e-9, atol=1e-9)
    assert int(read(f"stats/sites/{SITE}/count")[0]) == x.shape[0]
    d_sae = spec.index_plan(store_path, SAE)["d_sae"]  # type: ignore[index]
    for latent in range(d_sae):
        token, value = spec.postings(store_path, SAE, latent)
        from_codes = spec.occurrences_from_codes(store_path, SAE, latent)
        assert np.array_equal(token, from_codes[0]) and np.array_equal(value, from_codes[1]), latent
        occ = latents.occurrences(latent)
        assert np.array_equal(occ["token"].to_numpy(), token) and np.array_equal(occ["value"].to_numpy(), value.astype(np.float32))
    profile = {name: read(f"index/{SAE}/profile/{name}") for name in spec.PROFILE}
    for latent in np.flatnonzero(profile["count"])[:8].tolist():  # the stored counts, as the spec defines them
        fired, corpus = spec.profile_from_codes(store_path, SAE, latent)
        kept = profile["token_id"][latent] >= 0
        for tok, n, seen in zip(*(profile[f"token_{a}"][latent][kept] for a in ("id", "count", "corpus")), strict=True):
            assert n == sum(v for (_, t), v in fired.items() if t == tok) and seen == sum(v for (_, t), v in corpus.items() if t == tok)
        pairs = zip(*(profile[f"bigram_{a}"][latent][profile["bigram_id"][latent] >= 0] for a in ("prev", "id", "count", "corpus")), strict=True)
        assert all(fired[(p, t)] == n and corpus[(p, t)] == seen for p, t, n, seen in pairs)
        ours = latents.token_profile(latent)
        assert ours.filter(kind="token")["count"].to_list() == profile["token_count"][latent][kept].tolist()
