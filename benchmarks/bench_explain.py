"""Explanations on the demo store: does each scorer carry signal, and how fast is each?

1. Real versus shuffled: explains ``--latents`` mid-density latents of the demo SAE with
   SmolLM2-135M-Instruct (the demo's explain config, in this process), then scores every
   latent's explanation and, on the same held-out windows, the next latent's (shuffled) with each
   scorer: embedding, detection, fuzzing. A scorer with signal ranks the real ones higher; the
   mean number (AUROC) of both and the judges' yes-rates are printed.
2. Explanations per minute with each scorer alone (and the explainer alone) on this CPU.
3. ``--planted``: latents whose meaning is known. Directions fitted on the demo's stored
   activations so that each fires on one concept (held-out precision and recall printed) are
   encoded and indexed into a copy of the store; each planted latent is explained by SmolLM2,
   and each scorer scores the true explanation, another concept's and an unrelated one.

Nothing is written to the demo store. Needs ``make demo`` first (runs/demo). Run:
``.venv/bin/python benchmarks/bench_explain.py [--latents N] [--planted]``
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from actstore.api import Store
from actstore.config import load_config
from actstore.explain.config import ExplainConfig
from actstore.explain.job import Job
from actstore.explain.planted import concept_ids, fit_planted, save_planted
from actstore.explain.profile import Profiles
from actstore.explain.prompts import ANSWER_PREFIX, parse_explanation
from actstore.explain.run import plan_jobs
from actstore.explain.scoring import Worker, score_text

ROOT = Path(__file__).parents[1]
SCORERS = ("embedding", "detection", "fuzzing")
# concept -> (its tokens in SmolLM2's tokenizer, the true explanation)
PLANTED = {"await": ([" await"], "the keyword await"), "self": ([" self"], "the word self"),
           "return": ([" return"], "the keyword return"), "import": ([" import"], "the keyword import"),
           "None": ([" None"], "the constant None"), "digits": ([str(d) for d in range(10)], "digits")}
RANDOM = "names of flowering garden plants"


def _number(row: dict[str, Any], scorer: str) -> float:
    value = row.get(f"{scorer}_auroc")
    return float(value if value is not None else row.get(f"{scorer}_balanced_accuracy") or 0.5)


def _explain(worker: Worker, jobs: list[Job], config: ExplainConfig) -> tuple[list[str], float]:
    """Each job's parsed explanation (the raw answer when it did not parse) and the seconds taken."""
    start, texts = time.perf_counter(), []
    for job in jobs:
        raw, _ = worker.chat.generate(job.messages, sampling=config.sampling, prefix=ANSWER_PREFIX)
        texts.append(parse_explanation(raw) or raw.removeprefix(ANSWER_PREFIX).strip())
    return texts, time.perf_counter() - start


def _scored(worker: Worker, job: Job, text: str, config: ExplainConfig, scorer: str) -> tuple[dict[str, Any], float]:
    one = config.model_copy(update={"scorers": [scorer]})
    start = time.perf_counter()
    return score_text(worker, job._replace(baseline_text=None), text, one), time.perf_counter() - start


def real_versus_shuffled(latents: Any, config: ExplainConfig, worker: Worker, n: int) -> None:
    density = latents.density().filter(latents.density()["count"] > 0).sort("density")
    mid = density.height // 2
    chosen = density[mid - n // 2 : mid - n // 2 + n]
    profiles = Profiles(latents)
    jobs = [plan_jobs(latents, int(r["latent"]), config, density=float(r["density"]), profiles=profiles)[0]
            for r in chosen.iter_rows(named=True)]
    texts, seconds = _explain(worker, jobs, config)
    print(f"explainer (SmolLM2-135M-Instruct): {60 * len(jobs) / seconds:.1f} explanations/min")
    timing: dict[str, float] = dict.fromkeys(SCORERS, 0.0)
    for scorer in SCORERS:
        real, shuffled, yes = [], [], []
        for i, job in enumerate(jobs):
            row, took = _scored(worker, job, texts[i], config, scorer)
            other, took2 = _scored(worker, job, texts[(i + 1) % len(jobs)], config, scorer)
            real.append(_number(row, scorer))
            shuffled.append(_number(other, scorer))
            yes.append(row.get(f"{scorer}_yes_rate"))
            timing[scorer] += took + took2
        rates = "" if yes[0] is None else f", yes-rate {np.mean([y for y in yes if y is not None]):.2f}"
        print(f"{scorer:9}: mean AUROC real {np.mean(real):.3f} vs shuffled {np.mean(shuffled):.3f} "
              f"(real above on {sum(r > s for r, s in zip(real, shuffled, strict=True))}/{len(jobs)}){rates}; "
              f"{60 * 2 * len(jobs) / timing[scorer]:.1f} explanations scored/min")
    for job, text in zip(jobs, texts, strict=True):
        print(f"  latent {job.latent:5d}: {text!r}")


def planted(url: str, sae_site: str, config: ExplainConfig, worker: Worker) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "store"
        shutil.copytree(url, copy, ignore=shutil.ignore_patterns("explanations"))
        store = Store.open(str(copy))
        fitted = fit_planted(store, sae_site, {name: concept_ids(store, toks) for name, (toks, _) in PLANTED.items()})
        print("planted directions, held out (every 5th context):")
        print(fitted.report)
        from actstore.cluster.encode import run_encode
        from actstore.cluster.index import run_index

        run_encode(str(copy), str(save_planted(fitted, Path(tmp) / "sae/params.npz")), name="planted", site=sae_site,
                   code_cap=len(PLANTED))
        run_index(str(copy), "planted")
        latents = Store.open(str(copy)).sae("planted")
        profiles = Profiles(latents)
        density = latents.density()["density"].to_numpy()
        jobs = [plan_jobs(latents, i, config, density=float(density[i]), profiles=profiles)[0] for i in range(len(PLANTED))]
        texts, _ = _explain(worker, jobs, config)
        truths = [truth for _, truth in PLANTED.values()]
        print("concept  | SmolLM2's explanation | " + " | ".join(f"{s} true/wrong/random" for s in SCORERS))
        for i, (name, job) in enumerate(zip(PLANTED, jobs, strict=True)):
            cells = []
            for scorer in SCORERS:
                cells.append("/".join(f"{_number(_scored(worker, job, t, config, scorer)[0], scorer):.2f}"
                                      for t in (truths[i], truths[(i + 1) % len(truths)], RANDOM)))
            print(f"{name:8} | {texts[i]!r} | " + " | ".join(cells))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=str(ROOT / "runs/demo"))
    parser.add_argument("--sae", default="topk-2048")
    parser.add_argument("--latents", type=int, default=6)
    parser.add_argument("--planted", action="store_true", help="also measure on planted latents (section 3)")
    args = parser.parse_args()
    if not Path(args.store).exists():
        print(f"bench_explain: {args.store} does not exist; run `make demo` first (skipped)")
        return 0
    config = load_config(ROOT / "jobs/configs/demo-explain.yaml", ExplainConfig)
    latents = Store.open(args.store).sae(args.sae)
    worker = Worker(config)
    real_versus_shuffled(latents, config, worker, args.latents)
    if args.planted:
        planted(args.store, latents.info.site, config, worker)
    return 0


if __name__ == "__main__":
    sys.exit(main())
