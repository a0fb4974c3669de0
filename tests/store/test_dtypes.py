"""bfloat16 is stored as uint16 and comes back bit for bit, through a real Zarr array."""

import ml_dtypes
import numpy as np
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from actstore.store.dtypes import from_storage, storage_dtype, to_storage


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 2**16 - 1), min_size=1, max_size=300))
def test_bf16_round_trip_through_zarr_is_bit_exact(bits: list[int]) -> None:
    values = np.array(bits, dtype=np.uint16).view(ml_dtypes.bfloat16)  # every pattern: NaNs, infs, subnormals
    arr = zarr.create_array(store=zarr.storage.MemoryStore(), shape=values.shape, chunks=(64,), dtype=storage_dtype("bfloat16"))
    arr[:] = to_storage(values, "bfloat16")
    back = from_storage(np.asarray(arr[:]), "bfloat16")
    assert back.dtype == ml_dtypes.bfloat16
    assert back.view(np.uint16).tolist() == bits


def test_plain_dtypes_are_stored_as_themselves() -> None:
    assert storage_dtype("float16") == np.float16
    assert storage_dtype("bfloat16") == np.uint16
    x = np.arange(4, dtype=np.float32)
    assert to_storage(x, "float32") is not None and from_storage(x, "float32").dtype == np.float32


def test_to_storage_refuses_a_rounding_conversion() -> None:
    import pytest

    with pytest.raises(TypeError, match="bfloat16"):
        to_storage(np.zeros(3, np.float32), "bfloat16")
