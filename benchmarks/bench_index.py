"""Top-k through the feature-major index versus scanning the token-major codes (delphi's way).

Generates a store of synthetic SAE codes (default 10M tokens, 16,384 latents, L0 ~60 with
Zipf-distributed latent frequencies, bf16 values), builds the index on the local Ray cluster,
then times, in the same run:
- top-k (k=20) of a latent through the index: the raw occurrences, and the full ``top_k`` with
  one example per document and 16-token windows;
- the baseline: read every unit's codes, keep the latent's entries, sort, take k.
Also reports index build throughput (non-zeros/s) and bytes per stored non-zero.
Goal: index top-k >= 100x faster than the scan and under 50 ms.

Run: ``.venv/bin/python benchmarks/bench_index.py [--tokens N] [--keep DIR]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1]))

from actstore.api import Store
from actstore.cluster.index import run_index
from actstore.store.layout import code_array, token_array
from actstore.store.store import EXTRACT_STAGE
from benchmarks.synthetic import make_store, scratch

SAE, CTX_LEN, CAP = "bench", 1024, 96


def scan_top_k(store: Store, latent: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The baseline: every unit's codes read, the latent's entries kept, sorted, k taken."""
    tokens, values = [], []
    for unit in store.units_done(EXTRACT_STAGE):
        ctxs = store.grid.contexts(unit)
        rows = slice(ctxs.start, ctxs.stop)
        idx = store.read(code_array(SAE, "idx"), rows).reshape(-1)
        flags = store.read(token_array("flags"), rows).reshape(-1)
        at = np.flatnonzero(idx == latent)
        at = at[flags[at // CAP] == 0]
        val = store.read(code_array(SAE, "val"), rows).reshape(-1)[at].astype(np.float32)
        tokens.append(ctxs.start * CTX_LEN + at // CAP)
        values.append(val)
    t, v = np.concatenate(tokens), np.concatenate(values)
    order = np.lexsort((t, -v))[:k]
    return t[order], v[order]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=10_000_000)
    parser.add_argument("--d-sae", type=int, default=16_384)
    parser.add_argument("--l0", type=int, default=60)
    parser.add_argument("--keep", help="folder for the store (default: a temporary one)")
    args = parser.parse_args()
    root = Path(args.keep) if args.keep else scratch("bench-index")
    url = str(root / "store")
    t0 = time.perf_counter()
    store = (make_store(url, args.tokens, ctx_len=CTX_LEN, sae=(SAE, args.d_sae, args.l0, CAP))
             if not Path(url).exists() else Store.open(url))
    print(f"store: {store.meta.n_ctx * CTX_LEN:,} token slots, {store.meta.n_units} units ({time.perf_counter() - t0:.0f} s to generate)")

    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    t0 = time.perf_counter()
    plan = run_index(url, SAE, progress=True)
    build = time.perf_counter() - t0
    index_bytes = sum(f.stat().st_size for f in (root / "store/index" / SAE).rglob("*") if f.is_file())
    print(f"index build: {plan.nnz:,} non-zeros in {build:.1f} s on 2 CPUs = {plan.nnz / build:,.0f} non-zeros/s; "
          f"{plan.n_buckets} buckets; {index_bytes / plan.nnz:.2f} bytes per non-zero")

    store = Store.open(url)
    latents = store.sae(SAE)
    counts = latents.counts()
    order = np.argsort(counts)
    chosen = [int(order[int(q * (len(order) - 1))]) for q in (0.5, 0.75, 0.9, 0.99, 1.0)]
    raw, warm = [], []
    for latent in chosen:
        fresh = Store.open(url).sae(SAE)  # cold: nothing cached, arrays opened on first use
        t0 = time.perf_counter()
        fresh.occurrences(latent, limit=20)
        raw.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        fresh.occurrences(latent, limit=20)
        warm.append(time.perf_counter() - t0)
    print(f"index top-20 occurrences: median {statistics.median(raw) * 1e3:.1f} ms cold (store just opened), "
          f"{statistics.median(warm) * 1e3:.1f} ms warm, over latents with {[int(counts[c]) for c in chosen]} occurrences")
    t0 = time.perf_counter()
    ref_t, ref_v = scan_top_k(store, chosen[-1], 20)
    scan = time.perf_counter() - t0
    got_t, got_v = latents.postings(chosen[-1], limit=20)
    assert np.array_equal(ref_t, got_t) and np.array_equal(ref_v, got_v), "index and scan disagree"
    print(f"baseline scan of the token-major codes + sort: {scan * 1e3:,.0f} ms for one latent")
    print(f"ratio (scan / index, median): {scan / statistics.median(raw):,.0f}x  (goal >= 100x, index < 50 ms)")


if __name__ == "__main__":
    main()
