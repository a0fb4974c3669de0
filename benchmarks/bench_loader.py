"""Training-loader throughput: shuffled ``store.loader`` versus a sequential raw Zarr read of
the same activations array, in one run, on a local store and on the S3 API server (moto).

Store: synthetic bf16 activations (default 262,144 tokens x 1024 wide = 512 MiB). The baseline
reads the array front to back in slices of 64 contexts with plain zarr (no flags, no shuffle,
no conversion). The loader runs one shuffled epoch yielding bf16 tensors of 4,096 tokens
(BOS dropped, the mixing buffer on). Goal: loader >= 0.8x the sequential read.

Run: ``.venv/bin/python benchmarks/bench_loader.py [--tokens N] [--d D]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr

sys.path.insert(0, str(Path(__file__).parents[1]))


from actstore.api import Store
from actstore.store.layout import activation_array
from benchmarks.synthetic import make_store, on_moto

SITE = "blocks.12.hook_resid_post"


def sequential(store: Store) -> tuple[float, int]:
    arr = store.array(activation_array(SITE))
    t0, n = time.perf_counter(), 0
    for start in range(0, arr.shape[0], 64):
        n += np.asarray(arr[start : start + 64]).nbytes
    return time.perf_counter() - t0, n


def shuffled(store: Store, **options: int) -> tuple[float, int, int]:
    loader = store.loader(SITE, batch_size=4096, seed=0, dtype=torch.bfloat16, **options)
    t0, n, tokens = time.perf_counter(), 0, 0
    for x in loader:
        n += x.numel() * 2
        tokens += x.shape[0]
    return time.perf_counter() - t0, n, tokens


def report(where: str, store: Store, **options: int) -> None:
    seq_s, seq_bytes = sequential(store)
    sh_s, sh_bytes, tokens = shuffled(store, **options)
    slots = store.meta.n_ctx * store.meta.ctx_len
    print(f"{where}: sequential zarr read {slots / seq_s:,.0f} tokens/s ({seq_bytes / seq_s / 2**20:,.0f} MiB/s); "
          f"shuffled loader {tokens / sh_s:,.0f} tokens/s ({sh_bytes / sh_s / 2**20:,.0f} MiB/s); "
          f"ratio {(tokens / sh_s) / (slots / seq_s):.2f} (goal >= 0.8) {options or ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=262_144)
    parser.add_argument("--d", type=int, default=1024)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="actstore-bench-loader-"))
    make_store(str(root / "store"), args.tokens, site=(SITE, args.d))
    local = Store.open(str(root / "store"))
    report("local", local)
    report("local, 16-context chunks", local, chunk_contexts=16)

    with on_moto(root / "store") as endpoint, zarr.config.set({"async.concurrency": 16}):
        remote = Store.open("s3://bench/store", storage_options={"endpoint_url": endpoint})
        report("S3 API server (moto, loopback)", remote)
        # moto reads a whole object to serve any range of it, so inner-chunk reads of 128 MiB
        # shards are slow there (not on S3 itself); whole-shard chunks avoid ranges
        report("S3 API server, whole-shard chunks", remote, chunk_contexts=remote.meta.contexts_per_unit, mix_chunks=2)


if __name__ == "__main__":
    main()
