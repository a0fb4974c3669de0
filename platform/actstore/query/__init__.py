"""The query layer: polars DataFrames over a store's codes, index and statistics."""
