"""Whole shards encoded in the writer's thread: the bytes zarr writes itself, through every codec chain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from actstore.store.layout import CODECS, compressors
from actstore.store.shards import write_whole_shard


def test_a_whole_shard_is_the_bytes_zarr_writes(tmp_path: Path) -> None:
    values = np.random.default_rng(0).integers(0, 1000, (4, 16, 8)).astype(np.uint16)
    values[2:] = 7  # inner chunks equal to the fill value are written like the others
    for compression in CODECS:
        fast, plain = (zarr.create_array(store=str(tmp_path / compression), name=name, shape=(10, 16, 8), chunks=(2, 16, 8),
                                         shards=(4, 16, 8), dtype="uint16", fill_value=7, compressors=compressors(compression, 2))
                       .with_config({"write_empty_chunks": True}) for name in ("fast", "plain"))
        assert write_whole_shard(fast, slice(4, 8), values)
        plain[4:8] = values
        shard = Path(tmp_path, compression, "fast", "c", "1", "0", "0").read_bytes()
        assert shard == Path(tmp_path, compression, "plain", "c", "1", "0", "0").read_bytes(), compression
        np.testing.assert_array_equal(fast[4:8], values)
        np.testing.assert_array_equal(zarr.open_array(str(tmp_path / compression / "fast"))[:4], 7)  # nothing else written
        # not one whole shard (the short last one, misaligned rows, another dtype): left to zarr, nothing written
        assert not write_whole_shard(fast, slice(8, 10), values[:2])
        assert not write_whole_shard(fast, slice(2, 6), values)
        assert not write_whole_shard(fast, slice(0, 4), values.astype(np.int32))
        assert sorted(p.name for p in Path(tmp_path, compression, "fast", "c").iterdir()) == ["1"]


def test_a_whole_shard_on_object_storage(s3_endpoint: str, s3_bucket: str) -> None:
    """Through both S3 backends (zarr's FsspecStore and obstore, retries included): the same
    object as zarr's own write, read back by zarr."""
    import s3fs

    from actstore.store._fs import Location

    values = np.random.default_rng(1).integers(0, 1000, (4, 16, 8)).astype(np.uint16)
    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint, skip_instance_cache=True)
    for backend in ("fsspec", "obstore"):
        store = Location(f"s3://{s3_bucket}/{backend}", {"endpoint_url": s3_endpoint}, backend).zarr_store()
        fast, plain = (zarr.create_array(store=store, name=name, shape=(8, 16, 8), chunks=(2, 16, 8), shards=(4, 16, 8),
                                         dtype="uint16", compressors=compressors("shuffle-zstd", 2)) for name in ("fast", "plain"))
        assert write_whole_shard(fast, slice(4, 8), values)
        plain[4:8] = values
        assert fs.cat(f"{s3_bucket}/{backend}/fast/c/1/0/0") == fs.cat(f"{s3_bucket}/{backend}/plain/c/1/0/0"), backend
        np.testing.assert_array_equal(fast[4:8], values)
