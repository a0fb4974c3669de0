"""Logical dtypes and their lossless storage dtypes.

Zarr v3 has no registered bfloat16, so bfloat16 is stored bit for bit as uint16 and the array's
``logical_dtype`` attribute says how to view it back. Every other dtype is stored as itself.
"""

from __future__ import annotations

from typing import Literal

import ml_dtypes
import numpy as np

__all__ = ["LogicalDtype", "from_storage", "numpy_dtype", "storage_dtype", "to_storage"]

LogicalDtype = Literal["bfloat16", "float16", "float32", "float64", "int32", "int64", "uint8", "uint16", "uint32"]

_STORAGE = {"bfloat16": np.dtype(np.uint16)}
_LOGICAL = {"bfloat16": np.dtype(ml_dtypes.bfloat16)}


def storage_dtype(logical: str) -> np.dtype:
    """The numpy dtype a logical dtype is stored as."""
    return _STORAGE.get(logical, np.dtype(logical))


def numpy_dtype(logical: str) -> np.dtype:
    """The numpy dtype of a logical dtype (bfloat16 through ml_dtypes)."""
    return _LOGICAL.get(logical, np.dtype(logical))


def to_storage(values: np.ndarray, logical: str) -> np.ndarray:
    """Reinterpret (never round) values of the logical dtype for storage."""
    expected = numpy_dtype(logical)
    if values.dtype != expected:
        raise TypeError(f"expected {logical} values, got {values.dtype}")
    return values.view(storage_dtype(logical))


def from_storage(values: np.ndarray, logical: str) -> np.ndarray:
    """View stored values as their logical dtype (bit-exact inverse of :func:`to_storage`)."""
    return values.view(numpy_dtype(logical))
