"""Elastic workers: the same extraction on a multi-node local Ray cluster, without and with a
node added mid-run.

A tiny Gemma 2 (random weights) with one SAE over a sample corpus; each unit is slowed down by
``--delay`` seconds (``ACTSTORE_UNIT_DELAY_S``: the unit's own compute takes milliseconds here)
so that a unit costs about what a GPU unit of the real model would relative to a worker's start.
The cluster (``ray.cluster_utils.Cluster``) has a head with one CPU, so one CPU worker; run B adds
a one-CPU node once ``--add-after`` units are committed, and the driver starts a second worker on
it. Both runs start from the same ingested tokens. Printed: each run's wall time (driver start to
end), the workers over time from its run record, and the ratio of the wall times.

Run: ``.venv/bin/python benchmarks/bench_elastic.py [--docs 60] [--delay 0.5] [--add-after 1]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from tests.elastic import ElasticDriver, ElasticRun
from tests.helpers import (
    make_gemma_scope_sae,
    make_tiny_gemma2,
    make_tiny_tokenizer,
    sample_records,
    write_jsonl,
)

from actstore.cluster.ingest import run_ingest
from actstore.config import ExtractConfig
from benchmarks.synthetic import scratch

SITE = "blocks.1.hook_resid_post"


def _config(root: Path, store: Path) -> ExtractConfig:
    return ExtractConfig.model_validate({
        "store": {"url": str(store)},
        "corpus": {"paths": [str(root / "corpus.jsonl")]},
        "model": {"id": str(root / "model")},
        "context": {"ctx_len": 16, "contexts_per_unit": 4},
        "sites": [{"name": SITE}],
        "saes": [{"name": "res1", "site": SITE, "path": str(root / "sae"), "code_cap": 16}],
        "workers": {"batch_size": 2},
    })


def _run(root: Path, tokens: Path, name: str, delay: float, add_after: int | None) -> ElasticRun:
    store, work = root / name, root / f"{name}-work"
    shutil.copytree(tokens, store)
    work.mkdir()
    driver = ElasticDriver(_config(root, store), work, {"ACTSTORE_UNIT_DELAY_S": str(delay)})
    if add_after is not None:
        driver.wait_for(lambda: driver.units_done() >= add_after)
        driver.add_node()
    return driver.finish()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=60, help="sample documents in the corpus (60: 34 units)")
    parser.add_argument("--delay", type=float, default=0.5, help="seconds each unit is held before its manifest")
    parser.add_argument("--add-after", type=int, default=1, help="run B adds a node once this many units are committed")
    args = parser.parse_args()

    import ray

    root = scratch("elastic")
    write_jsonl(root / "corpus.jsonl", sample_records(args.docs, seed=5))
    make_tiny_gemma2(root / "model", make_tiny_tokenizer(root / "tokenizer"))
    make_gemma_scope_sae(root / "sae/params.npz", 64, 48, threshold=0.6)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)  # ingest once, here
    tokens = root / "tokens"
    store = run_ingest(_config(root, tokens).ingest_config())
    ray.shutdown()
    print(f"{store.meta.n_units} units, {args.delay} s held each; load {os.getloadavg()[0]:.1f}")

    runs = {"A fixed (head only)": _run(root, tokens, "a", args.delay, None),
            f"B node added after {args.add_after} units": _run(root, tokens, "b", args.delay, args.add_after)}
    for name, run in runs.items():
        print(f"{name}: wall {run.wall_s:.1f} s, units run {run.record['units_run']}, "
              f"workers over time (s after the units started, workers running) {run.workers_over_time()}, "
              f"events (s after the driver started) {run.events}")
    a, b = (run.wall_s for run in runs.values())
    print(json.dumps({"wall_fixed_s": round(a, 1), "wall_added_s": round(b, 1), "ratio_added_over_fixed": round(b / a, 2),
                      "load": round(os.getloadavg()[0], 1)}))


if __name__ == "__main__":
    main()
