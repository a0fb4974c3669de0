"""Unit u is exactly shard u of every array: no two units ever share a stored object."""

import json

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from actstore.store import layout
from actstore.store.dtypes import numpy_dtype, storage_dtype
from actstore.store.layout import CODECS, UnitGrid, create_unit_array


def _keys(store: zarr.storage.MemoryStore, prefix: str) -> set[str]:
    return {k for k in store._store_dict if k.startswith(prefix) and not k.endswith("zarr.json")}


@settings(max_examples=25, deadline=None)
@given(
    n_ctx=st.integers(1, 40),
    cpu=st.integers(1, 9),
    ctx_len=st.integers(2, 9),
    tail=st.sampled_from([(), (3,), (2, 5)]),
    dtype=st.sampled_from(["bfloat16", "float32", "int32", "uint8"]),
    per_token=st.booleans(),
)
def test_each_unit_writes_exactly_one_object_of_its_own(n_ctx, cpu, ctx_len, tail, dtype, per_token) -> None:
    grid = UnitGrid(n_ctx, ctx_len, cpu)
    store = zarr.storage.MemoryStore()
    group = zarr.open_group(store, mode="w")
    arr = create_unit_array(group, "a/x", grid, tail, dtype, per_token=per_token)
    seen: dict[str, int] = {}
    for unit in range(grid.n_units):
        before = _keys(store, "a/x")
        rows = grid.contexts(unit) if per_token else range(unit, unit + 1)
        block = np.ones((len(rows), *arr.shape[1:]), dtype=arr.dtype)
        arr[rows.start : rows.stop] = block
        written = _keys(store, "a/x") - before
        assert len(written) == 1, (unit, written)  # one object per unit...
        key = written.pop()
        assert key not in seen, f"unit {unit} rewrote unit {seen.get(key)}'s object"  # ...its own
        seen[key] = unit
    assert np.all(np.asarray(arr[:]) == 1)


def test_grid_contexts_cover_every_context_once() -> None:
    grid = UnitGrid(n_ctx=23, ctx_len=4, contexts_per_unit=5)
    covered = [c for u in range(grid.n_units) for c in grid.contexts(u)]
    assert covered == list(range(23))
    assert grid.n_units == 5 and grid.unit_of(22) == 4


SPEC_CODECS = {"bytes", "blosc", "zstd", "sharding_indexed", "crc32c"}  # codecs of the Zarr v3 specification


@pytest.mark.parametrize("compression", CODECS)
@pytest.mark.parametrize("logical", ["bfloat16", "float32"])
def test_compressed_activations_decode_bit_identical(tmp_path, monkeypatch, compression, logical) -> None:
    """Every codec chain is lossless (NaN payloads, -0, inf, subnormals included) and readable by a
    plain Zarr v3 reader from the array's own metadata, sharded or not."""
    rng = np.random.default_rng(0)
    values = (rng.standard_normal((12, 16, 96)) * np.exp(rng.normal(0, 3, (12, 16, 1)))).astype(numpy_dtype(logical))
    bits = values.view(storage_dtype(logical)).copy()
    special = np.array([np.nan, -0.0, np.inf, -np.inf, 1e-40], dtype=np.float32).astype(numpy_dtype(logical))
    bits[0, 0, :5] = special.view(storage_dtype(logical))
    bits[1, 1, :3] = np.array([0x7FC1, 0xFFFF, 0x0001]).astype(storage_dtype(logical))  # odd NaN payloads, tiny
    monkeypatch.setattr(layout, "TARGET_INNER_CHUNK_BYTES", 3 * 16 * 96 * 4)  # inner chunks of <= 3 contexts
    group = zarr.open_group(zarr.storage.LocalStore(tmp_path), mode="w", zarr_format=3)
    for name, cpu in (("plain", 3), ("sharded", 12)):
        arr = create_unit_array(group, name, UnitGrid(12, 16, cpu), (96,), logical, compression=compression)
        arr[:] = bits
        plain = zarr.open_array(zarr.storage.LocalStore(tmp_path / name, read_only=True), mode="r")
        assert np.array_equal(np.asarray(plain[:]).view(np.uint8), bits.view(np.uint8))
        chain = json.loads((tmp_path / name / "zarr.json").read_text())["codecs"]
        names = {c["name"] for c in chain} | {c["name"] for c in chain[0].get("configuration", {}).get("codecs", [])}
        assert names <= SPEC_CODECS, names
        assert (chain[0]["name"] == "sharding_indexed") == (name == "sharded")
