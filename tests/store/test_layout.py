"""Unit u is exactly shard u of every array: no two units ever share a stored object."""

import numpy as np
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from actstore.store.layout import UnitGrid, create_unit_array


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
