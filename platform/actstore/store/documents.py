"""The documents table: one Parquet part per source file under ``documents/``."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    from actstore.store._fs import SideFiles

__all__ = ["scan_documents"]

PREFIX = "documents"


def scan_documents(files: SideFiles) -> pl.LazyFrame:
    """All documents of the store whose side files are ``files``, ordered by global index ``doc``."""
    parts = [p for p in files.list(PREFIX) if p.endswith(".parquet")]
    if not parts:
        return pl.LazyFrame({"doc": pl.Series([], dtype=pl.Int64)})
    if files.location.is_local:
        frames = [pl.scan_parquet(files.path(f"{PREFIX}/{p}")) for p in parts]
    else:
        frames = [pl.read_parquet(io.BytesIO(files.read_bytes(f"{PREFIX}/{p}"))).lazy() for p in parts]
    # parts may disagree on a metadata column's type (all-null in one file): relax to a supertype
    return pl.concat(frames, how="diagonal_relaxed").sort("doc")
