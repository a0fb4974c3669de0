"""The feature-major index at two corpus sizes in one run (default 10M and 100M token slots).

For each size: a synthetic store of SAE codes (16,384 latents, L0 uniform in [L0/2, 3 L0/2]
per token, mean 16 by default, Zipf-distributed latent frequencies, bf16 values, code cap 2 L0),
the index built on the local Ray cluster (2 CPUs) while the memory of the driver and of every
Ray worker process is sampled, then, for latents at count quantiles (median ... densest):
top-20 occurrences with the store just opened (cold: nothing cached but the OS's page cache) and
again (warm), and the decoding cost of a whole posting list per occurrence. Also bytes per stored
non-zero of the codes and of the index. At the first size, the baseline: scan every unit's
token-major codes for the latent, sort, take 20 (delphi's way). A size's store is removed before
the next is generated (disk), unless ``--keep``.

Goals: top-k at the largest size within 1.5x of the smallest; peak memory of a build task flat
in corpus size; index top-k >= 100x faster than the scan and under 50 ms.

Run: ``.venv/bin/python benchmarks/bench_index.py [--tokens 10000000,100000000] [--l0 16] [--keep DIR]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).parents[1]))

from actstore.api import Store
from actstore.cluster.index import run_index
from actstore.store.codes import read_codes
from actstore.store.layout import token_array
from actstore.store.store import EXTRACT_STAGE
from benchmarks.synthetic import make_store, scratch

SAE, CTX_LEN, K = "bench", 1024, 20
QUANTILES = (0.5, 0.75, 0.9, 0.99, 1.0)
# per non-zero while the index builds: the map's staging (unit-local uint16 token, bucket-local
# uint16 latent, bf16 value; then the token profiles' int32 token and preceding token ids)
STAGING_BYTES = 6 + 8
SPARE_DISK = 15 * 2**30  # what a size must leave free on the disk (it is shared)


class PeakMemory:
    """Peak resident memory of this process and of the largest Ray worker process (named
    ``ray::...``: the map and reduce tasks), sampled every 0.2 s while the block runs."""

    def __init__(self) -> None:
        self.driver = self.task = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(0.2):
            self.driver = max(self.driver, me.memory_info().rss)
            for proc in me.children(recursive=True):
                try:
                    if proc.cmdline()[:1] and proc.cmdline()[0].startswith("ray::"):
                        self.task = max(self.task, proc.memory_info().rss)
                except psutil.Error:  # a worker that just ended
                    pass


def scan_top_k(store: Store, latent: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The baseline: every unit's codes read, the latent's entries kept, sorted, k taken."""
    tokens, values = [], []
    for unit in store.units_done(EXTRACT_STAGE):
        ctxs = store.grid.contexts(unit)
        rows = slice(ctxs.start, ctxs.stop)
        codes = read_codes(store, SAE, rows)
        assert codes.idx is not None and codes.val is not None
        cap = codes.idx.shape[-1]
        idx, flags = codes.idx.reshape(-1), store.read(token_array("flags"), rows).reshape(-1)
        at = np.flatnonzero(idx == latent)
        at = at[flags[at // cap] == 0]
        tokens.append(ctxs.start * CTX_LEN + at // cap)
        values.append(codes.val.reshape(-1)[at].astype(np.float32))
    t, v = np.concatenate(tokens), np.concatenate(values)
    order = np.lexsort((t, -v))[:k]
    return t[order], v[order]


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def measure(root: Path, tokens: int, d_sae: int, l0: int, *, scan: bool) -> dict[str, Any]:
    """Generate, index and query one size; the figures of :func:`main`'s table."""
    url = str(root / "store")
    t0 = time.perf_counter()
    store = (make_store(url, tokens, ctx_len=CTX_LEN, sae=(SAE, d_sae, l0, 2 * l0))
             if not Path(url).exists() else Store.open(url))
    out: dict[str, Any] = {"slots": store.meta.n_ctx * CTX_LEN, "units": store.meta.n_units,
                           "generate_s": time.perf_counter() - t0}
    t0 = time.perf_counter()
    with PeakMemory() as peak:
        plan = run_index(url, SAE, progress=False)
    out |= {"build_s": time.perf_counter() - t0, "nnz": plan.nnz or 0, "buckets": plan.n_buckets,
            "driver_rss": peak.driver, "task_rss": peak.task}
    codes_nnz = int(store.read(f"codes/{SAE}/l0", slice(None)).sum())
    profile = folder_bytes(root / "store/index" / SAE / "profile")
    out |= {"codes_b": folder_bytes(root / "store/codes" / SAE) / codes_nnz, "profile_mb": profile / 2**20,
            "index_b": (folder_bytes(root / "store/index" / SAE) - profile) / max(out["nnz"], 1)}
    counts = Store.open(url).sae(SAE).counts()
    order = np.argsort(counts)
    chosen = [int(order[int(q * (len(order) - 1))]) for q in QUANTILES]
    cold, warm = [], []
    for latent in chosen:
        fresh = Store.open(url).sae(SAE)  # cold: nothing cached, arrays opened on first use
        t0 = time.perf_counter()
        fresh.occurrences(latent, limit=K)
        cold.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        fresh.occurrences(latent, limit=K)
        warm.append(time.perf_counter() - t0)
    latents = Store.open(url).sae(SAE)
    t0 = time.perf_counter()
    whole = latents.postings(chosen[-1])[0].size
    out |= {"cold_ms": statistics.median(cold) * 1e3, "warm_ms": statistics.median(warm) * 1e3,
            "counts": [int(counts[c]) for c in chosen], "decode_us": (time.perf_counter() - t0) / max(whole, 1) * 1e6}
    if scan:
        t0 = time.perf_counter()
        ref = scan_top_k(store, chosen[-1], K)
        out["scan_ms"] = (time.perf_counter() - t0) * 1e3
        got = latents.postings(chosen[-1], limit=K)
        assert np.array_equal(ref[0], got[0]) and np.array_equal(ref[1], got[1]), "index and scan disagree"
    return out


def report(size: dict[str, Any]) -> None:
    mb = 2**20
    print(f"  {size['slots']:,} token slots in {size['units']:,} units (generated in {size['generate_s']:.0f} s); "
          f"{size['nnz']:,} non-zeros indexed in {size['build_s']:.0f} s = {size['nnz'] / size['build_s']:,.0f}/s, "
          f"{size['buckets']} buckets", flush=True)
    print(f"  peak memory: driver {size['driver_rss'] / mb:,.0f} MiB, largest build task {size['task_rss'] / mb:,.0f} MiB; "
          f"bytes per non-zero: codes {size['codes_b']:.2f}, index {size['index_b']:.2f} "
          f"(and {size['profile_mb']:.1f} MiB of token profiles)")
    print(f"  top-{K}: median {size['cold_ms']:.1f} ms cold, {size['warm_ms']:.1f} ms warm over latents with "
          f"{size['counts']} occurrences; a whole posting list decodes at {size['decode_us']:.3f} us per occurrence"
          + (f"; scan baseline {size['scan_ms']:,.0f} ms ({size['scan_ms'] / size['cold_ms']:,.0f}x the cold top-{K})"
             if "scan_ms" in size else ""), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", default="10000000,100000000", help="comma-separated corpus sizes (token slots)")
    parser.add_argument("--d-sae", type=int, default=16_384)
    parser.add_argument("--l0", type=int, default=16, help="mean L0 (uniform in [L0/2, 3 L0/2] per token)")
    parser.add_argument("--keep", help="folder for the stores, kept (default: a temporary one, each size removed after use)")
    args = parser.parse_args()
    sizes = [int(float(t)) for t in args.tokens.split(",")]
    base = Path(args.keep) if args.keep else scratch("bench-index")
    print(f"load average {os.getloadavg()[0]:.1f} at start; {shutil.disk_usage(base).free / 2**30:,.0f} GiB free at {base}")

    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    results: list[dict[str, Any]] = []
    for i, tokens in enumerate(sizes):
        root = base / f"{tokens}"
        per_nnz = results[-1]["codes_b"] + results[-1]["index_b"] + STAGING_BYTES if results else 14.0
        need, free = tokens * args.l0 * per_nnz, shutil.disk_usage(base).free
        print(f"{tokens:,} tokens: needs about {need / 2**30:,.1f} GiB at the build's peak ({per_nnz:.1f} B per non-zero), "
              f"{free / 2**30:,.1f} GiB free", flush=True)
        if free - need < SPARE_DISK:
            sys.exit(f"not enough disk for {tokens:,} tokens at L0 {args.l0}: it would leave less than "
                     f"{SPARE_DISK / 2**30:.0f} GiB free; pass a smaller --l0 or --tokens")
        results.append(measure(root, tokens, args.d_sae, args.l0, scan=i == 0))
        report(results[-1])
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    small, large = results[0], results[-1]
    print(f"largest / smallest: top-{K} cold {large['cold_ms'] / small['cold_ms']:.2f}x, warm "
          f"{large['warm_ms'] / small['warm_ms']:.2f}x (goal <= 1.5x); build task memory "
          f"{large['task_rss'] / small['task_rss']:.2f}x, driver {large['driver_rss'] / small['driver_rss']:.2f}x (goal: flat); "
          f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
