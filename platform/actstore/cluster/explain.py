"""``actstore explain``: automatic explanations of many latents, resumable.

The driver picks the latents, draws their examples and builds their prompts (plain functions in
``actstore.explain.run``), drops the jobs whose cache key is already in the SAE's explanations
table, and runs the rest: on Ray actors holding the local chat model (one per GPU, with
``num_gpus`` each, or ``cpu_actors`` on a CPU-only cluster), or on a thread pool of
``concurrency`` requests against an OpenAI-compatible endpoint. Results are committed in parts
of ``commit_every`` rows as they arrive, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import ray

from actstore.api import Store
from actstore.cluster.runtime import cluster_cpus, ensure_ray, run_on_pool, unwrapped_errors
from actstore.config import RayConfig
from actstore.errors import ConfigError
from actstore.explain.backends import make_backend
from actstore.explain.config import ExplainConfig, LocalBackend, OpenAIBackend
from actstore.explain.run import Job, plan_job, run_job
from actstore.explain.table import append_explanations, scan_explanations

__all__ = ["ExplainSummary", "choose_latents", "run_explain"]

logger = logging.getLogger(__name__)


class ExplainSummary(NamedTuple):
    """What a run did: results made, found cached, latents skipped (too rare), answers unparsed."""

    made: int
    cached: int
    skipped: int
    unparsed: int
    seconds: float
    prompt_tokens: int


class _Explainer:
    """A Ray actor holding one loaded backend."""

    def __init__(self, backend: LocalBackend, config: ExplainConfig) -> None:
        self.backend = make_backend(backend)
        self.config = config

    def run(self, job: Job) -> tuple[dict[str, Any], int]:
        return run_job(self.backend, job, self.config)


def choose_latents(latents: Any, *, ids: Sequence[int] | None, densest: int | None) -> list[int]:
    """Explicit ids (checked against d_sae), or the ``densest`` latents by count, or refuse."""
    if (ids is None) == (densest is None):
        raise ConfigError("give latents (--latents 1,2,...) or a number of densest latents (--densest N), not both")
    if ids is not None:
        bad = [i for i in ids if not 0 <= i < latents.info.d_sae]
        if bad:
            raise ConfigError(f"latents {bad} are out of range for SAE {latents.name!r} (d_sae={latents.info.d_sae})")
        return list(dict.fromkeys(int(i) for i in ids))
    density = latents.density().filter(latents.density()["count"] > 0).sort(["count", "latent"], descending=[True, False])
    return density["latent"].head(int(densest or 0)).to_list()


def run_explain(url: str, sae: str, *, latents: Sequence[int] | None = None, densest: int | None = None,
                config: ExplainConfig | None = None, storage_options: dict[str, Any] | None = None,
                ray_config: RayConfig | None = None, progress: bool = False) -> ExplainSummary:
    """Explain and score latents of ``sae``; results go to the store's explanations table."""
    from tqdm.auto import tqdm

    config = config or ExplainConfig()
    start = time.perf_counter()
    store = Store.open(url, storage_options=storage_options)
    sae_latents = store.sae(sae)
    chosen = choose_latents(sae_latents, ids=latents, densest=densest)
    if isinstance(config.backend, OpenAIBackend):
        make_backend(config.backend)  # a missing key fails here, before any work
    density = sae_latents.density()["density"].to_numpy()
    done = set(scan_explanations(store, sae).select("key").collect()["key"].to_list())
    jobs, skipped = [], 0
    for latent in tqdm(chosen, desc="examples", unit="latent", disable=not progress):
        job = plan_job(sae_latents, latent, config, density=float(density[latent]))
        if job is None:
            skipped += 1
        elif job.key not in done:
            jobs.append(job)
    made, unparsed, tokens, batch = 0, 0, 0, []
    with tqdm(total=len(jobs), desc="explain", unit="latent", disable=not progress) as bar:
        for row, prompt_tokens in _results(jobs, config, ray_config):
            batch.append(row)
            made, unparsed, tokens = made + 1, unparsed + (not row["parsed"]), tokens + prompt_tokens
            if len(batch) >= config.commit_every:
                append_explanations(store, sae, batch)
                batch = []
            bar.update(1)
    append_explanations(store, sae, batch)
    return ExplainSummary(made, len(chosen) - skipped - len(jobs), skipped, unparsed, time.perf_counter() - start, tokens)


def _results(jobs: list[Job], config: ExplainConfig, ray_config: RayConfig | None) -> Iterator[tuple[dict[str, Any], int]]:
    if not jobs:
        return
    backend = config.backend
    if isinstance(backend, OpenAIBackend):
        chat = make_backend(backend)
        with ThreadPoolExecutor(backend.concurrency) as pool:
            yield from pool.map(lambda job: run_job(chat, job, config), jobs)
        return
    ensure_ray(ray_config)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus:
        n, options = max(1, int(gpus / backend.num_gpus)), {"num_gpus": backend.num_gpus, "num_cpus": 1}
    else:  # the free CPUs shared out among the actors (Ray sets an actor's torch threads to its num_cpus)
        free = int(ray.available_resources().get("CPU", 1))
        n, options = backend.cpu_actors, {"num_cpus": max(1, min(cluster_cpus(), free) // backend.cpu_actors)}
    actor = ray.remote(**options)(_Explainer)  # type: ignore[call-overload]
    actors = [actor.remote(backend, config) for _ in range(min(n, len(jobs)))]
    try:
        with unwrapped_errors():
            yield from run_on_pool(actors, "run", jobs)
    finally:
        for a in actors:
            ray.kill(a)
