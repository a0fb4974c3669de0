"""s3fs (fsspec) versus obstore (zarr's ObjectStore) on the S3 API server, in one run.

A synthetic store (bf16 activations, default 131,072 tokens x 1024 wide = 256 MiB, units of 8
contexts of 1024 tokens) is uploaded to a loopback moto server. For each backend, interleaved over
3 rounds: (1) unit writes: every unit's activation shard rewritten as a worker writes it
(whole-shard PUTs, units written concurrently as ``Store.write_many`` does); (2) loader reads: one
shuffled epoch of ``store.loader`` (bf16 batches of 4,096 tokens). Prints MiB/s per backend and
the ratio obstore / s3fs. moto is CPU-bound on this machine, so the ratio, not the absolute
throughput, is what carries over.

Run: ``.venv/bin/python benchmarks/bench_backends.py [--tokens N] [--d D]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parents[1]))


from actstore.api import Store
from actstore.store.layout import activation_array
from benchmarks.synthetic import make_store, on_moto, scratch

SITE = "blocks.12.hook_resid_post"
BACKENDS = ("fsspec", "obstore")


def unit_writes(store: Store, shards: list[np.ndarray]) -> float:
    """MiB/s of rewriting every unit's activation shard."""
    grid = store.grid
    writes = [(activation_array(SITE), slice(grid.contexts(u).start, grid.contexts(u).stop), shard)
              for u, shard in enumerate(shards)]
    t0 = time.perf_counter()
    store.write_many(writes)
    return sum(s.nbytes for s in shards) / (time.perf_counter() - t0) / 2**20


def loader_reads(store: Store) -> float:
    """MiB/s of one shuffled loader epoch."""
    loader = store.loader(SITE, batch_size=4096, seed=0, dtype=torch.bfloat16,
                          chunk_contexts=store.meta.contexts_per_unit, mix_chunks=2)
    t0, n = time.perf_counter(), 0
    for x in loader:
        n += x.numel() * 2
    return n / (time.perf_counter() - t0) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=131_072)
    parser.add_argument("--d", type=int, default=1024)
    args = parser.parse_args()
    root = scratch("bench-backends")
    local = make_store(str(root / "store"), args.tokens, per_unit=8, site=(SITE, args.d))
    shards = [local.read(activation_array(SITE), slice(r.start, r.stop)).view(np.uint16)
              for r in (local.grid.contexts(u) for u in range(local.meta.n_units))]
    with on_moto(root / "store") as endpoint:
        opts = {"endpoint_url": endpoint}
        stores = {b: Store.open("s3://bench/store", storage_options=opts, mode="r+", backend=b) for b in BACKENDS}
        results: dict[str, dict[str, list[float]]] = {b: {"write": [], "read": []} for b in BACKENDS}
        for _ in range(3):
            for backend, store in stores.items():
                results[backend]["write"].append(unit_writes(store, shards))
                results[backend]["read"].append(loader_reads(store))
        mib = sum(s.nbytes for s in shards) / 2**20
        print(f"S3 API server (moto, loopback), {mib:.0f} MiB of bf16 activations in {len(shards)} units; median of 3 rounds")
        med = {b: {k: float(np.median(v)) for k, v in r.items()} for b, r in results.items()}
        for backend in BACKENDS:
            print(f"{backend:8s}: unit writes {med[backend]['write']:7.1f} MiB/s, loader reads {med[backend]['read']:7.1f} MiB/s")
        print(f"obstore / s3fs: writes {med['obstore']['write'] / med['fsspec']['write']:.2f}x, "
              f"reads {med['obstore']['read'] / med['fsspec']['read']:.2f}x")


if __name__ == "__main__":
    main()
