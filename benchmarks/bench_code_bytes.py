"""Bytes per stored non-zero of an SAE's codes and index: as the store holds them, and with the
same codes written again in memory in each candidate layout (the chunking and codecs a store
uses, through zarr), so that the layout of format 3 is chosen on real codes.

Codes: latent ids as int32 with -1 past the L0 (format 2), as uint16 (format 3), or sorted by id
and stored as gaps; values in float32, bfloat16 or float16; zstd alone, or after Blosc byte or bit
shuffle. Index: absolute tokens in value order (format 2), or blocks of B value ranks stored in
token order as gaps (format 3), with the values in either order. The decoding cost of a block is
measured in ``bench_index.py``.

Run: ``.venv/bin/python benchmarks/bench_code_bytes.py runs/demo --sae topk-2048``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import zarr
from zarr.codecs import BloscCodec, ZstdCodec
from zarr.storage import MemoryStore

sys.path.insert(0, str(Path(__file__).parents[1]))

from actstore.api import Store
from actstore.index.postings import block_layout
from actstore.store.codes import read_codes
from actstore.store.layout import FLAG_BOS, FLAG_PAD, token_array

CHUNK = 65_536  # entries per chunk of the index arrays


def stored_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def encoded_bytes(data: np.ndarray, codec: str, chunks: tuple[int, ...]) -> int:
    """Bytes of ``data`` written as a zarr array with ``chunks`` through ``codec``: zstd, or
    shuffle / bitshuffle then zstd (Blosc), as the store's arrays are; metadata left out."""
    if codec == "zstd":
        compressors = [ZstdCodec(level=0)]
    else:
        compressors = [BloscCodec(cname="zstd", clevel=1, shuffle=codec, typesize=data.dtype.itemsize, blocksize=2**20)]
    memory = MemoryStore()
    arr = zarr.create_array(memory, shape=data.shape, chunks=chunks, dtype=data.dtype, compressors=compressors, fill_value=0)
    arr[...] = data
    return sum(len(v.to_bytes()) for k, v in memory._store_dict.items() if not k.endswith("zarr.json"))


def as_dtype(values: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values rounded to ``dtype``, as the bits a store keeps (bfloat16 as uint16)."""
    if dtype == "bfloat16":
        return values.astype(ml_dtypes.bfloat16).view(np.uint16)
    return values.astype(dtype)


def code_candidates(idx: np.ndarray, val: np.ndarray, per_unit: int, dtypes: list[str]) -> dict[str, int]:
    """Bytes of the token-major codes [n_ctx, ctx_len, cap] in each layout (one shard per unit)."""
    chunks = (per_unit, *idx.shape[1:])
    valid = idx >= 0
    ids16 = np.where(valid, idx, 0).astype(np.uint16 if idx.max() < 2**16 else np.uint32)
    by_id = np.argsort(np.where(valid, idx, np.iinfo(np.int32).max), axis=-1, kind="stable")
    sorted_ids = np.take_along_axis(idx, by_id, -1)
    gaps = np.where(sorted_ids >= 0, np.diff(np.where(sorted_ids >= 0, sorted_ids, 0), axis=-1, prepend=0), 0).astype(ids16.dtype)
    out = {"ids int32, -1 past L0, zstd (format 2)": encoded_bytes(idx.astype(np.int32), "zstd", chunks)}
    for codec in ("zstd", "shuffle", "bitshuffle"):
        out[f"ids {ids16.dtype} by value, {codec}"] = encoded_bytes(ids16, codec, chunks)
    out[f"ids {ids16.dtype} by id as gaps, bitshuffle"] = encoded_bytes(gaps, "bitshuffle", chunks)
    for dtype in dtypes:
        for codec in ("zstd", "shuffle", "bitshuffle"):
            out[f"values {dtype} by value, {codec}"] = encoded_bytes(as_dtype(val, dtype), codec, chunks)
        out[f"values {dtype} by id, bitshuffle"] = encoded_bytes(as_dtype(np.take_along_axis(val, by_id, -1), dtype), "bitshuffle", chunks)
    return out


def index_candidates(latent: np.ndarray, token: np.ndarray, value: np.ndarray, d_sae: int, n_tokens: int,
                     dtypes: list[str]) -> dict[str, int]:
    """Bytes of the postings (in rank order: latent, value descending, token) in each layout."""
    chunks = (min(CHUNK, max(token.size, 1)),)
    offsets = np.zeros(d_sae + 1, np.int64)
    np.cumsum(np.bincount(latent, minlength=d_sae), out=offsets[1:])
    out = {"offsets int64, zstd (both formats)": encoded_bytes(offsets, "zstd", (offsets.size,)),
           "tokens int64 by value, zstd (format 2)": encoded_bytes(token, "zstd", chunks),
           "tokens int64 by value, bitshuffle": encoded_bytes(token, "bitshuffle", chunks)}
    for dtype in dtypes:
        out[f"values {dtype} by value, zstd"] = encoded_bytes(as_dtype(value, dtype), "zstd", chunks)
        out[f"values {dtype} by value, bitshuffle"] = encoded_bytes(as_dtype(value, dtype), "bitshuffle", chunks)
    for block in (1024, 4096, 16384, 65536):
        order, gaps = block_layout(latent, token, offsets, block, n_tokens)
        for codec in ("shuffle", "bitshuffle"):
            out[f"blocks of {block}: token gaps int64, {codec}"] = encoded_bytes(gaps, codec, chunks)
        for dtype in dtypes:
            for codec in ("shuffle", "bitshuffle"):
                out[f"blocks of {block}: values {dtype}, {codec}"] = encoded_bytes(as_dtype(value[order], dtype), codec, chunks)
    return out


def postings(store: Store, idx: np.ndarray, val: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(latent, token, value) of every indexed occurrence (BOS and padding left out), in rank order."""
    n, cap = idx.shape[0] * idx.shape[1], idx.shape[2]
    flags = store.read(token_array("flags"), slice(0, idx.shape[0])).reshape(n)
    ids, vals = idx.reshape(n, cap), val.reshape(n, cap)
    token, slot = np.nonzero((ids >= 0) & ((flags & (FLAG_BOS | FLAG_PAD)) == 0)[:, None])
    latent, value = ids[token, slot].astype(np.int64), vals[token, slot]
    order = np.lexsort((token, -value, latent))
    return latent[order], token[order].astype(np.int64), value[order]


def report(title: str, sizes: dict[str, int], nnz: int) -> None:
    print(f"\n{title} ({nnz:,} non-zeros)")
    for name, size in sizes.items():
        print(f"  {name:52s} {size / nnz:6.3f} B/non-zero")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store", nargs="?", default="runs/demo")
    parser.add_argument("--sae", default="topk-2048")
    args = parser.parse_args()
    store = Store.open(args.store)
    info = next(s for s in store.meta.saes if s.name == args.sae)
    units = store.units_done(info.stage)
    if units != list(range(store.meta.n_units)):
        sys.exit(f"{args.store}: only {len(units)} of {store.meta.n_units} units are committed; run on a finished store")
    codes = read_codes(store, args.sae, slice(0, store.meta.n_ctx))
    assert codes.val is not None
    idx, val = codes.idx, codes.val.astype(np.float32)
    nnz = int((idx >= 0).sum())
    root = Path(args.store)
    print(f"{args.store} (format {store.meta.format_version}), SAE {args.sae}: d_sae {info.d_sae}, code cap {info.code_cap}, "
          f"values {info.value_dtype}, {store.meta.n_ctx * store.meta.ctx_len:,} token slots, mean L0 {nnz / idx[..., 0].size:.1f}")
    indexed = (root / "index" / args.sae).exists()
    index_nnz = store.sae(args.sae).index.nnz or 1 if indexed else 1
    # the token profiles (index/<sae>/profile) hold a few rows per latent, not per occurrence: apart
    profile = stored_bytes(root / "index" / args.sae / "profile") if indexed else 0
    postings = stored_bytes(root / "index" / args.sae) - profile if indexed else 0
    print(f"as stored: codes {stored_bytes(root / 'codes' / args.sae) / nnz:.2f} B/non-zero ({nnz:,})"
          + (f", index {postings / index_nnz:.2f} B/non-zero ({index_nnz:,}; token profiles {profile / 2**10:,.0f} KiB "
             f"more, {profile / index_nnz:.2f} B/non-zero on this store)" if indexed else ""))
    dtypes = ["float32", "bfloat16", "float16"] if info.value_dtype == "float32" else [info.value_dtype]
    l0 = encoded_bytes(store.read(f"codes/{args.sae}/l0", slice(None)), "zstd", (store.meta.contexts_per_unit, store.meta.ctx_len))
    report(f"codes, each part alone (l0: {l0 / nnz:.3f} B/non-zero in every layout)",
           code_candidates(idx, val, store.meta.contexts_per_unit, dtypes), nnz)
    latent, token, value = postings(store, idx, val)
    report("index, each part alone", index_candidates(latent, token, value, info.d_sae, idx.shape[0] * idx.shape[1], dtypes),
           token.size)


if __name__ == "__main__":
    main()
