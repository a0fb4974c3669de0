"""Training-loader throughput: shuffled ``store.loader`` versus a sequential raw Zarr read of
the same activations array, in one run, on a local store and on the S3 API server (moto).

Store: synthetic bf16 activations (default 262,144 tokens x 1024 wide = 512 MiB). The baseline
reads the array front to back in slices of 64 contexts with plain zarr (no flags, no shuffle,
no conversion), decoded into one buffer it reuses. The loader runs one shuffled epoch yielding bf16 tensors of 4,096 tokens
(BOS dropped, the mixing buffer on), with the loader's defaults; one loader serves every epoch,
as in a training run. Both sides run in interleaved rounds after a warm-up of each. Goal: loader >= 0.8x the sequential read.

Huge pages: numpy advises the kernel to back arrays of 4 MiB and more with huge pages. On this
benchmark's machine (a VM with transparent huge pages on "madvise"), the same 128 MiB read then
took either 0.1 s or 0.4 s, at random, on both sides, which swung single rounds from 0.3x to 4x.
So the benchmark turns that advice off (``NUMPY_MADVISE_HUGEPAGE=0``, set before numpy loads,
inherited by the S3 server) unless ``--hugepages`` is given; it applies to both sides alike.

Run: ``.venv/bin/python benchmarks/bench_loader.py [--tokens N] [--d D] [--rounds R] [--hugepages]``
"""

from __future__ import annotations

import argparse
import os
import sys

if __name__ == "__main__" and "--hugepages" not in sys.argv:  # before numpy is imported (see the docstring)
    os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")
import time
from pathlib import Path

import numpy as np
import torch
import zarr
from zarr.core.buffer import default_buffer_prototype

sys.path.insert(0, str(Path(__file__).parents[1]))


from actstore.api import Store
from actstore.loader.activations import ActivationLoader
from actstore.store.layout import activation_array
from benchmarks.synthetic import make_store, on_moto, scratch

SITE = "blocks.12.hook_resid_post"


def sequential(store: Store, buffer: np.ndarray) -> float:
    """Seconds for a front-to-back read in slices of 64 contexts, decoded into ``buffer``, kept
    across reads: the best case of a plain read (a fresh array per slice adds its page faults)."""
    arr = store.array(activation_array(SITE))
    into = default_buffer_prototype().nd_buffer.from_numpy_array
    t0 = time.perf_counter()
    for start in range(0, arr.shape[0], 64):
        stop = min(start + 64, arr.shape[0])
        arr.get_basic_selection(slice(start, stop), out=into(buffer[: stop - start]))
    return time.perf_counter() - t0


def epoch(loader: ActivationLoader) -> tuple[float, int]:
    """Seconds and tokens of the loader's next shuffled epoch."""
    t0, tokens = time.perf_counter(), 0
    for x in loader:
        tokens += x.shape[0]
    return time.perf_counter() - t0, tokens


def report(where: str, store: Store, rounds: int, **options: int) -> None:
    """One loader for the whole run, as a training run holds it for its epochs (its group
    buffers are reused; so is the sequential read's). A warm-up of each side, then ``rounds``
    interleaved sequential reads and shuffled epochs (drift and the server's warm-up hit both
    sides alike). The ratio is of the median rates; every round's ratio is printed."""
    arr = store.array(activation_array(SITE))
    buffer = np.empty((64, *arr.shape[1:]), arr.dtype)
    loader = store.loader(SITE, batch_size=4096, seed=0, dtype=torch.bfloat16, **options)
    sequential(store, buffer)
    epoch(loader)
    ratios, seq_rates, sh_rates = [], [], []
    slots = store.meta.n_ctx * store.meta.ctx_len
    for _ in range(rounds):
        seq_rates.append(slots / sequential(store, buffer))
        seconds, tokens = epoch(loader)
        sh_rates.append(tokens / seconds)
        ratios.append(sh_rates[-1] / seq_rates[-1])
    print(f"{where}: sequential zarr read {np.median(seq_rates):,.0f} tokens/s; shuffled loader {np.median(sh_rates):,.0f} "
          f"tokens/s; ratio {np.median(sh_rates) / np.median(seq_rates):.2f} (rounds {', '.join(f'{r:.2f}' for r in ratios)}; goal >= 0.8) {options or ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=262_144)
    parser.add_argument("--d", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hugepages", action="store_true", help="keep numpy's huge-page advice (noisier on some machines)")
    args = parser.parse_args()
    root = scratch("bench-loader")
    make_store(str(root / "store"), args.tokens, site=(SITE, args.d))
    local = Store.open(str(root / "store"))
    report("local", local, args.rounds)
    report("local, 16-context chunks", local, args.rounds, chunk_contexts=16)

    with on_moto(root / "store") as endpoint, zarr.config.set({"async.concurrency": 16}):
        remote = Store.open("s3://bench/store", storage_options={"endpoint_url": endpoint})
        report("S3 API server (moto, loopback)", remote, args.rounds)


if __name__ == "__main__":
    main()
