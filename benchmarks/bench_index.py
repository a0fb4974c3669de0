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
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1]))

from actstore._version import __version__
from actstore.cluster.index import run_index
from actstore.store._fs import Location
from actstore.store.layout import FLAG_BOS, code_array, create_unit_array, token_array
from actstore.store.metadata import IngestSummary, RootMetadata, SaeInfo, StageInfo, TokenizerInfo
from actstore.store.stats import create_stats_arrays, sae_stats_path
from actstore.store.store import EXTRACT_STAGE, TOKENS_STAGE, Store, utc_now

SAE, CTX_LEN, PER_UNIT, CAP = "bench", 1024, 64, 96


def generate(url: str, n_tokens: int, d_sae: int, l0: int, seed: int = 0) -> Store:
    """A store with token arrays (one document per context) and codes of one SAE, all committed."""
    n_ctx = -(-n_tokens // CTX_LEN)
    tok = TokenizerInfo(source={"id": "synthetic"}, name_or_path="synthetic", vocab_size=50_000, bos_token_id=1,
                        eos_token_id=2, pad_token_id=2)
    meta = RootMetadata(actstore_version=__version__, created=utc_now(), tokenizer=tok, ctx_len=CTX_LEN,
                        contexts_per_unit=PER_UNIT, n_ctx=n_ctx, n_units=-(-n_ctx // PER_UNIT), packing="document",
                        separator="none", ingest=IngestSummary(n_files=1, n_documents=n_ctx, n_tokens=n_ctx * (CTX_LEN - 1),
                                                               skipped_empty=0, repaired_utf8=0, truncated_by_cap=False),
                        saes=[SaeInfo(name=SAE, site="synthetic", architecture="jumprelu", d_in=1, d_sae=d_sae,
                                      code_cap=CAP, value_dtype="bfloat16", source="synthetic", sha256="0")],
                        stages={TOKENS_STAGE: StageInfo(units_total=-(-n_ctx // PER_UNIT), complete=True),
                                EXTRACT_STAGE: StageInfo(units_total=-(-n_ctx // PER_UNIT), complete=True)})
    store = Store.create(Location(url, {}), meta)
    grid = store.grid
    arrays = {"ids": ("int32", 0), "doc": ("int64", -1), "pos": ("int32", -1), "flags": ("uint8", 0)}
    for name, (dtype, fill) in arrays.items():
        create_unit_array(store.group, token_array(name), grid, (), dtype, fill_value=fill)
    create_unit_array(store.group, code_array(SAE, "idx"), grid, (CAP,), "int32", fill_value=-1)
    create_unit_array(store.group, code_array(SAE, "val"), grid, (CAP,), "bfloat16")
    create_unit_array(store.group, code_array(SAE, "l0"), grid, (), "int32")
    create_stats_arrays(store.group, grid, {}, {SAE: d_sae})
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, d_sae + 1) ** 0.8
    p /= p.sum()
    perm = rng.permutation(d_sae)  # frequency rank -> latent id
    import ml_dtypes

    for unit in range(grid.n_units):
        ctxs = grid.contexts(unit)
        n = len(ctxs) * CTX_LEN
        draws = perm[rng.choice(d_sae, size=(n, CAP), p=p)]
        draws.sort(axis=1)
        dup = np.zeros_like(draws, bool)
        dup[:, 1:] = draws[:, 1:] == draws[:, :-1]
        l0s = rng.integers(l0 // 2, l0 * 3 // 2 + 1, size=n)
        keep = (~dup) & (np.cumsum(~dup, axis=1) <= l0s[:, None])
        idx = np.where(keep, draws, -1).astype(np.int32)
        val = np.where(keep, rng.exponential(2.0, size=idx.shape), 0).astype(ml_dtypes.bfloat16)
        flags = np.zeros((len(ctxs), CTX_LEN), np.uint8)
        flags[:, 0] = FLAG_BOS
        rows = slice(ctxs.start, ctxs.stop)
        store.write(token_array("ids"), rows, rng.integers(3, 50_000, size=(len(ctxs), CTX_LEN), dtype=np.int32))
        store.write(token_array("doc"), rows, np.repeat(np.arange(ctxs.start, ctxs.stop), CTX_LEN).reshape(len(ctxs), CTX_LEN))
        store.write(token_array("pos"), rows, np.tile(np.arange(CTX_LEN, dtype=np.int32), (len(ctxs), 1)))
        store.write(token_array("flags"), rows, flags)
        store.write(code_array(SAE, "idx"), rows, idx.reshape(len(ctxs), CTX_LEN, CAP))
        store.write(code_array(SAE, "val"), rows, val.view(np.uint16).reshape(len(ctxs), CTX_LEN, CAP))
        store.write(code_array(SAE, "l0"), rows, keep.sum(1).astype(np.int32).reshape(len(ctxs), CTX_LEN))
        counted = np.repeat(flags.reshape(-1) == 0, CAP) & (idx.reshape(-1) >= 0)
        store.write(sae_stats_path(SAE, "fired"), unit, np.bincount(idx.reshape(-1)[counted], minlength=d_sae))
        for stage in (TOKENS_STAGE, EXTRACT_STAGE):
            store.manifests.commit(stage, unit, {"contexts": [ctxs.start, ctxs.stop]})
    return store


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
    root = Path(args.keep or tempfile.mkdtemp(prefix="actstore-bench-index-"))
    url = str(root / "store")
    t0 = time.perf_counter()
    store = generate(url, args.tokens, args.d_sae, args.l0) if not Path(url).exists() else Store.open(url)
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
