"""Writing one whole shard, encoded in the calling thread.

``array[rows] = values`` hands a shard to zarr's single event-loop thread, which fills every
inner chunk with the fill value, copies the chunk's values in and concatenates the compressed
chunks there (only the compression itself goes to threads). Per 65k-token unit of Gemma 2 2B
that loop thread spent ~1.7-2 s of CPU (benchmarks/bench_host.py), so one process wrote at most
~22-38k tokens/s however many cores it had (docs/scale.md), and it read the shard's old object first. Here the
array's own codec pipeline encodes the shard in the writer's thread (in its own event loop),
and zarr's loop only stores the bytes: the same codecs, the same bytes, and the writers of a
unit's arrays (and of units in flight) run in parallel.
"""

from __future__ import annotations

import asyncio

import numpy as np
import zarr
from zarr.abc.codec import CodecPipeline
from zarr.core.array_spec import ArraySpec
from zarr.core.buffer import Buffer, NDBuffer, default_buffer_prototype
from zarr.core.sync import sync

__all__ = ["write_whole_shard"]


def write_whole_shard(arr: zarr.Array, rows: slice | int, values: np.ndarray) -> bool:
    """Write ``values`` as the one whole shard ``rows`` selects of a sharded array; False (nothing
    written) when ``rows`` is not exactly one whole shard of matching shape and dtype, or when
    this thread runs an event loop (the caller then writes through ``arr[rows] = values``)."""
    shards = arr.shards
    if shards is None or not isinstance(rows, slice) or values.dtype != arr.dtype or _in_event_loop():
        return False
    start, stop, step = rows.indices(arr.shape[0])
    if step != 1 or start % shards[0] or values.shape != tuple(shards) or stop - start != shards[0]:
        return False
    if tuple(shards[1:]) != tuple(arr.shape[1:]):
        return False
    target = arr.async_array
    coords = (start // shards[0],) + (0,) * (arr.ndim - 1)
    prototype = default_buffer_prototype()
    spec = target.metadata.get_chunk_spec(coords, target.config, prototype)
    value = prototype.nd_buffer.from_numpy_array(np.ascontiguousarray(values))
    [encoded] = asyncio.run(_encode(target.codec_pipeline, value, spec))
    path = target.store_path / target.metadata.encode_chunk_key(coords)
    sync(path.delete() if encoded is None else path.set(encoded))
    return True


async def _encode(pipeline: CodecPipeline, value: NDBuffer, spec: ArraySpec) -> list[Buffer | None]:
    return list(await pipeline.encode([(value, spec)]))


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
