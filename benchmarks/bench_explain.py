"""Automatic explanations on the demo store: throughput of the local backend and a baseline.

Explains ``--latents`` mid-density latents of the demo SAE with the demo's explain config and
SmolLM2-135M-Instruct in this process (the model, not Ray, is what is timed), reporting
explanations per minute and prompt tokens per explanation. Then the judges score every latent's
explanation and, on the same held-out windows, another latent's explanation (shuffled: each
latent gets the next one's text). Real explanations should score higher than shuffled ones;
the ratio of mean balanced accuracies is printed. Nothing is written to the store.

Needs ``make demo`` first (runs/demo). Run: ``.venv/bin/python benchmarks/bench_explain.py [--latents N]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from actstore.api import Store
from actstore.config import load_config
from actstore.explain.backends import LocalChat
from actstore.explain.config import ExplainConfig, LocalBackend
from actstore.explain.prompts import ANSWER_PREFIX, parse_explanation
from actstore.explain.run import plan_job, score_text

ROOT = Path(__file__).parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=str(ROOT / "runs/demo"))
    parser.add_argument("--sae", default="topk-2048")
    parser.add_argument("--latents", type=int, default=6)
    args = parser.parse_args()
    if not Path(args.store).exists():
        print(f"bench_explain: {args.store} does not exist; run `make demo` first (skipped)")
        return 0
    config = load_config(ROOT / "jobs/configs/demo-explain.yaml", ExplainConfig)
    latents = Store.open(args.store).sae(args.sae)
    density = latents.density().filter(latents.density()["count"] > 0).sort("density")
    mid = density.height // 2
    chosen = density[mid - args.latents // 2 : mid - args.latents // 2 + args.latents]
    jobs = [plan_job(latents, int(r["latent"]), config, density=float(r["density"])) for r in chosen.iter_rows(named=True)]
    jobs = [j for j in jobs if j is not None]
    chat = LocalChat(LocalBackend())
    texts, tokens, start = [], [], time.perf_counter()
    for job in jobs:
        raw, n = chat.generate(job.messages, sampling=config.sampling, prefix=ANSWER_PREFIX)
        texts.append(parse_explanation(raw) or raw)
        tokens.append(n)
    elapsed = time.perf_counter() - start
    print(f"explained {len(jobs)} latents in {elapsed:.1f} s: {60 * len(jobs) / elapsed:.1f} explanations/min, "
          f"{np.mean(tokens):.0f} prompt tokens per explanation (torch threads: {__import__('torch').get_num_threads()})")
    real = [score_text(chat, job, text, config) for job, text in zip(jobs, texts, strict=True)]
    shuffled = [score_text(chat, job, texts[(i + 1) % len(texts)], config) for i, job in enumerate(jobs)]
    for job, text, r, s in zip(jobs, texts, real, shuffled, strict=True):
        print(f"latent {job.latent:5d}  detection {r['detection_balanced_accuracy']:.2f} (shuffled "
              f"{s['detection_balanced_accuracy']:.2f})  fuzzing {r['fuzzing_balanced_accuracy']:.2f} (shuffled "
              f"{s['fuzzing_balanced_accuracy']:.2f})  {text!r}")
    for scorer in config.scorers:
        a = np.mean([r[f"{scorer}_balanced_accuracy"] or 0.5 for r in real])
        b = np.mean([s[f"{scorer}_balanced_accuracy"] or 0.5 for s in shuffled])
        print(f"{scorer}: mean balanced accuracy {a:.3f} real vs {b:.3f} shuffled (ratio {a / b:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
