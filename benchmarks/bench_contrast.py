"""Document filters and contrasts on the synthetic 10M-token store (bench_index's: 16,384
latents, L0 ~60, Zipf-distributed latent frequencies, bf16 values, one document per context).

Times, in the same run:
- ``density(where=...)`` for filters matching 1%, 10% and 50% of the documents (a run of
  documents, ``doc < N``) against the same over every document (``where="TRUE"``): a filtered
  statistic reads the set's codes only, so its time should follow the fraction; and for
  ``source = 'corpus/code.jsonl'`` (every 4th document, 25%): codes are read in chunks of
  several contexts (8 here), so a set strewn over every chunk costs a full read;
- the 20 strongest occurrences (``occurrences(latent, limit=20)``, top-k without the windows:
  the synthetic store has no tokenizer to decode them) of latents of median to top frequency,
  unfiltered (through the index) and filtered (the posting list filtered by arithmetic, or the
  set's codes, whichever is smaller);
- ``contrast(a="doc < N/2", b=...)``: the two halves of the store, tested per document, with the
  number of latents at q < 0.05 (the halves are exchangeable: expect none) and the peak memory.

Run: ``.venv/bin/python benchmarks/bench_contrast.py [--tokens N] [--keep DIR]`` (``--keep``: a
folder whose store and index a previous run, or bench_index's ``--keep``, left there).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1]))

from actstore.api import Store
from actstore.cluster.index import run_index
from actstore.errors import IndexNotFoundError
from benchmarks.synthetic import make_store, scratch

SAE, CTX_LEN, CAP = "bench", 1024, 96
FRACTIONS = (0.01, 0.1, 0.5)


def _timed(call, repeat: int = 1) -> float:
    """Median seconds of ``repeat`` calls, each on a freshly opened store (nothing cached)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _store(args: argparse.Namespace) -> str:
    root = Path(args.keep) if args.keep else scratch("bench-contrast")
    url = str(root / "store")
    t0 = time.perf_counter()
    if not Path(url).exists():
        make_store(url, args.tokens, ctx_len=CTX_LEN, sae=(SAE, args.d_sae, args.l0, CAP))
        print(f"store generated in {time.perf_counter() - t0:.0f} s")
    try:
        Store.open(url).sae(SAE).index  # noqa: B018
    except IndexNotFoundError:
        import ray

        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        t0 = time.perf_counter()
        run_index(url, SAE, progress=False)
        print(f"index built in {time.perf_counter() - t0:.0f} s")
        ray.shutdown()
    return url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=10_000_000)
    parser.add_argument("--d-sae", type=int, default=16_384)
    parser.add_argument("--l0", type=int, default=60)
    parser.add_argument("--keep", help="folder for the store (default: a temporary one)")
    args = parser.parse_args()
    url = _store(args)
    store = Store.open(url)
    print(f"store: {store.meta.n_ctx * CTX_LEN:,} token slots, {store.meta.n_ctx:,} documents, {store.meta.n_units} units")

    fresh = lambda: Store.open(url).sae(SAE)  # noqa: E731
    every = _timed(lambda: fresh().density(where="TRUE"))
    print(f"density over every document (a scan of all codes): {every:.2f} s")
    counts = fresh().counts()
    order = np.argsort(counts)
    chosen = [int(order[int(q * (len(order) - 1))]) for q in (0.5, 0.9, 0.99, 1.0)]
    plain = statistics.median(_timed(lambda lat=lat: fresh().occurrences(lat, limit=20)) for lat in chosen)
    print(f"top-20 unfiltered (index): median {plain * 1e3:.0f} ms over latents with {[int(counts[c]) for c in chosen]} occurrences")
    n_docs = store.meta.n_ctx
    cases = [(f, f"doc < {max(int(f * n_docs), 1)}") for f in FRACTIONS] + [(0.25, "source = 'corpus/code.jsonl'")]
    for fraction, where in cases:
        docs = fresh().select_documents(where)
        assert docs is not None
        t = _timed(lambda where=where: fresh().density(where=where))
        tops = [_timed(lambda lat=lat, where=where: fresh().occurrences(lat, limit=20, where=where)) for lat in chosen]
        print(f"where {where!r} ({docs.docs.size:,} documents, {fraction:.0%}): density {t:.2f} s = {t / every:.3f} of "
              f"every document's (fraction {fraction}); top-20 median {statistics.median(tops) * 1e3:.0f} ms "
              f"({statistics.median(tops) / plain:.1f}x unfiltered), slowest {max(tops) * 1e3:.0f} ms")
    half = store.meta.n_ctx // 2
    t0 = time.perf_counter()
    found = fresh().contrast(f"doc < {half}", f"doc >= {half}")
    took = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"contrast of the two halves ({found.a.units:,} vs {found.b.units:,} {found.unit}s, "
          f"{found.a.tokens + found.b.tokens:,} tokens): {took:.1f} s = {took / every:.2f}x the scan of every document; "
          f"{int((found.frame['q'] < 0.05).sum())} latents at q < 0.05 (exchangeable halves: expect 0); peak RSS {peak:.1f} GiB")


if __name__ == "__main__":
    main()
