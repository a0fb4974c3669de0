"""The store as an independent reader sees it: ``spec_reader`` follows STORE.md with zarr,
numpy and pyarrow only; here its view of the coded store is checked against the spec (every
array and group named, declared dtype, shape and attributes, nothing left unnamed) and its
decoded values against what actstore's own API returns."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import actstore
from tests.coded_store import SAE, SITE
from tests.store import spec_reader as spec


def test_the_reader_does_not_import_actstore() -> None:
    tree = ast.parse(Path(spec.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {m for m in imported if m.split(".")[0] in {"actstore", "tests"}}, imported


def test_every_object_is_in_the_spec_with_its_declared_dtype(coded_store: Path) -> None:
    checked = spec.check_store(coded_store)
    assert {"tokens/ids", f"activations/{SITE}", f"codes/{SAE}/val", f"stats/saes/{SAE}/hist", f"index/{SAE}/b00000/value"} <= set(checked)
    assert checked[f"stats/saes/{SAE}/hist"] == ("int64", "int64") and checked[f"stats/saes/{SAE}/units/hist"] == ("int32", "int32")


def test_an_object_the_spec_does_not_name_is_reported(coded_store: Path, tmp_path: Path) -> None:
    import shutil

    import zarr

    copy = tmp_path / "s"
    shutil.copytree(coded_store, copy, ignore=shutil.ignore_patterns("index", "codes", "_manifests"))
    (copy / "_manifests").mkdir()
    zarr.create_array(str(copy / "stats/extra"), shape=(2,), dtype="int8")
    with pytest.raises(AssertionError) as err:
        spec.check_store(copy)
    assert "stats/extra/zarr.json" in str(err.value) and f"codes/{SAE}/idx: missing" in str(err.value)


def test_decoded_values_equal_actstore(coded_store: Path) -> None:
    store = actstore.open(str(coded_store))
    meta = spec.root_metadata(coded_store)
    assert spec.done_units(coded_store, "extract") == store.units_done("extract") == list(range(meta["n_units"]))
    tokens = store.tokens(slice(None))
    for name in spec.TOKENS:
        assert np.array_equal(spec.read(coded_store, f"tokens/{name}"), tokens[name])
    for path in (f"activations/{SITE}", f"codes/{SAE}/idx", f"codes/{SAE}/val", f"codes/{SAE}/l0"):
        ours, theirs = spec.read(coded_store, path), store.read(path, slice(None))
        assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)
    for path in [p for p in spec.check_store(coded_store) if p.startswith("stats/")]:
        ours, theirs = spec.read(coded_store, path), store.read(path, slice(None))
        assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs), path  # merged hist read as int64 rows
    docs = spec.documents(coded_store)
    frame = store.documents().collect()
    assert docs.column_names[: len(frame.columns)] == frame.columns
    assert docs.column("doc").to_pylist() == frame["doc"].to_list() and docs.column("n_tokens").to_pylist() == frame["n_tokens"].to_list()


def test_statistics_and_index_decode_as_the_spec_says(coded_store: Path) -> None:
    latents = actstore.open(str(coded_store)).sae(SAE)
    read = lambda p: spec.read(coded_store, p)  # noqa: E731
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
    d_sae = spec.index_plan(coded_store, SAE)["d_sae"]  # type: ignore[index]
    for latent in range(d_sae):
        token, value = spec.postings(coded_store, SAE, latent)
        from_codes = spec.occurrences_from_codes(coded_store, SAE, latent)
        assert np.array_equal(token, from_codes[0]) and np.array_equal(value, from_codes[1]), latent
        occ = latents.occurrences(latent)
        assert np.array_equal(occ["token"].to_numpy(), token) and np.array_equal(occ["value"].to_numpy(), value.astype(np.float32))
