"""Where arrays live in the store and how they are shaped, chunked and sharded.

Every per-token array has the token axis ``[n_ctx, ctx_len]`` first. Along ``n_ctx`` the shard
size is ``contexts_per_unit``: unit ``u`` is exactly shard ``u`` of every array, so the worker
that owns a unit is the only writer of those shards. Inner chunks (the unit of reading) split a
shard along ``n_ctx`` only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

from actstore.store.dtypes import storage_dtype

__all__ = [
    "CODECS",
    "FLAG_BOS",
    "FLAG_EOS",
    "FLAG_PAD",
    "FLAG_SPECIAL",
    "NOT_TEXT",
    "TOKEN_ARRAYS",
    "Compression",
    "UnitGrid",
    "activation_array",
    "code_array",
    "compressors",
    "create_unit_array",
    "token_array",
]

FLAG_BOS = 1
FLAG_EOS = 2
FLAG_PAD = 4
FLAG_SPECIAL = 8  # a special token inside a document (a chat-template marker such as <start_of_turn>)
# Tokens that queries, the index, statistics and the loader leave out by default: the context's
# BOS, padding, and special tokens inside documents (Gemma Scope excluded BOS and padding from
# training; chat-template markers carry no document content).
NOT_TEXT = FLAG_BOS | FLAG_PAD | FLAG_SPECIAL

# name -> (dtype, fill value)
TOKEN_ARRAYS: dict[str, tuple[str, int]] = {
    "ids": ("int32", 0),
    "doc": ("int64", -1),
    "pos": ("int32", -1),
    "flags": ("uint8", FLAG_PAD),
}

TARGET_INNER_CHUNK_BYTES = 4 * 2**20

# Lossless codec chains for stored arrays, by name; all are codecs of the Zarr v3 specification
# (``zstd``, ``blosc``), so any Zarr v3 reader decodes them. ``shuffle-zstd`` is Blosc with byte
# shuffle (the i-th byte of every value together: bfloat16's sign+exponent bytes apart from its
# mantissa bytes) then zstd level 1 over 1 MiB blocks: on real SmolLM2 activations 1.45x smaller
# than raw for bfloat16 and 1.18x for float32, where zstd alone gives 1.28x and 1.08x
# (benchmarks/bench_codecs.py measures every chain). Format 3 SAE codes and index arrays use
# ``shuffle-zstd`` too (benchmarks/bench_code_bytes.py measures the choices on codes).
Compression = Literal["none", "zstd", "shuffle-zstd"]
CODECS: tuple[Compression, ...] = get_args(Compression)
SHUFFLE_BLOCK_BYTES = 2**20


def compressors(compression: Compression, itemsize: int) -> list[Any] | None:
    """The bytes-to-bytes codecs of a named chain (None: raw bytes)."""
    if compression == "none":
        return None
    if compression == "zstd":
        return [ZstdCodec(level=0)]
    return [BloscCodec(cname="zstd", clevel=1, shuffle="shuffle", typesize=itemsize, blocksize=SHUFFLE_BLOCK_BYTES)]


def token_array(name: str) -> str:
    """Path of a per-token array of the token group."""
    return f"tokens/{name}"


@dataclass(frozen=True)
class UnitGrid:
    """The token axis split into units."""

    n_ctx: int
    ctx_len: int
    contexts_per_unit: int

    @property
    def n_units(self) -> int:
        return math.ceil(self.n_ctx / self.contexts_per_unit)

    def contexts(self, unit: int) -> range:
        """Contexts of a unit (the last unit may be short)."""
        if not 0 <= unit < self.n_units:
            raise IndexError(f"unit {unit} out of range [0, {self.n_units})")
        start = unit * self.contexts_per_unit
        return range(start, min(start + self.contexts_per_unit, self.n_ctx))

    def unit_of(self, ctx: int) -> int:
        return ctx // self.contexts_per_unit


def create_unit_array(
    group: zarr.Group,
    name: str,
    grid: UnitGrid,
    tail: tuple[int, ...],
    logical_dtype: str,
    *,
    fill_value: int | float = 0,
    per_token: bool = True,
    compression: Compression = "zstd",
    attributes: dict[str, Any] | None = None,
) -> zarr.Array:
    """Create an array whose shard ``u`` holds unit ``u`` (overwriting any array of that name).

    ``per_token`` arrays are ``[n_ctx, ctx_len, *tail]``; otherwise ``[n_units, *tail]`` with one
    row per unit (per-unit statistics).
    """
    dtype = storage_dtype(logical_dtype)
    if per_token:
        shape = (grid.n_ctx, grid.ctx_len, *tail)
        shard = (grid.contexts_per_unit, grid.ctx_len, *tail)
        row_bytes = grid.ctx_len * int(np.prod(tail, dtype=np.int64)) * dtype.itemsize
        inner_ctx = max(1, min(grid.contexts_per_unit, TARGET_INNER_CHUNK_BYTES // max(row_bytes, 1)))
        # inner chunks must tile the shard exactly
        while grid.contexts_per_unit % inner_ctx:
            inner_ctx -= 1
        inner = (inner_ctx, grid.ctx_len, *tail)
    else:
        shape = (grid.n_units, *tail)
        shard = inner = (1, *tail)
    attrs: dict[str, Any] = {"logical_dtype": logical_dtype, "per_token": per_token, **(attributes or {})}
    return zarr.create_array(
        store=group.store,
        name=f"{group.path}/{name}".strip("/"),
        shape=shape,
        chunks=inner,
        shards=None if inner == shard else shard,
        dtype=dtype,
        fill_value=fill_value,
        compressors=compressors(compression, dtype.itemsize),
        attributes=attrs,
        overwrite=True,
    )


def activation_array(site: str) -> str:
    """Path of a site's activations ``[n_ctx, ctx_len, d]``."""
    return f"activations/{site}"


def code_array(sae: str, part: str) -> str:
    """Path of an SAE's code arrays: ``latent`` and ``value`` ``[n_ctx, ctx_len, cap]`` (``idx`` and ``val``
    before format 3), ``l0`` ``[n_ctx, ctx_len]``; ``actstore.store.codes`` reads them."""
    return f"codes/{sae}/{part}"
