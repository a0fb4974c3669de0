"""``actstore explain``: automatic explanations of many latents, resumable.

The driver reads the SAE's token profiles once, picks the latents, draws their examples and
builds their jobs (plain functions in ``actstore.explain.run``: an automatic explanation and the
token profile in words per latent), drops the jobs whose cache key is already in the SAE's
explanations table, and runs the rest: on Ray actors holding the local chat model (one per GPU,
with ``num_gpus`` each, or ``cpu_actors`` on a CPU-only cluster), on a thread pool of
``concurrency`` requests against an OpenAI-compatible endpoint, or, when no LLM is needed
(profiles scored by the embedding scorer only), in this process. Results are committed in parts
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
from actstore.errors import ConfigError, IndexNotFoundError
from actstore.explain.backends import make_backend
from actstore.explain.config import ExplainConfig, OpenAIBackend
from actstore.explain.job import Job
from actstore.explain.profile import Profiles
from actstore.explain.run import plan_jobs, run_job
from actstore.explain.scoring import Worker
from actstore.explain.table import append_explanations, scan_explanations

__all__ = ["ExplainSummary", "choose_latents", "run_explain"]

logger = logging.getLogger(__name__)


class ExplainSummary(NamedTuple):
    """What a run did: results made (rows: an explanation of one kind), found cached, latents
    skipped (too rare), answers unparsed."""

    made: int
    cached: int
    skipped: int
    unparsed: int
    seconds: float
    prompt_tokens: int


class _Explainer:
    """A Ray actor holding one worker (its models load on first use)."""

    def __init__(self, config: ExplainConfig) -> None:
        self.worker = Worker(config)
        self.config = config

    def run(self, job: Job) -> tuple[dict[str, Any], int]:
        return run_job(self.worker, job, self.config)


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
    if isinstance(config.backend, OpenAIBackend) and config.needs_llm:
        make_backend(config.backend)  # a missing key fails here, before any work
    profiles = _profiles(sae_latents, config)
    density = sae_latents.density()["density"].to_numpy()
    done = set(scan_explanations(store, sae).select("key").collect()["key"].to_list())
    jobs, skipped, cached = [], 0, 0
    for latent in tqdm(chosen, desc="examples", unit="latent", disable=not progress):
        planned = plan_jobs(sae_latents, latent, config, density=float(density[latent]), profiles=profiles)
        skipped += not planned
        cached += sum(job.key in done for job in planned)
        jobs += [job for job in planned if job.key not in done]
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
    return ExplainSummary(made, cached, skipped, unparsed, time.perf_counter() - start, tokens)


def _profiles(latents: Any, config: ExplainConfig) -> Profiles | None:
    """The SAE's token profiles, when the index has them; refused when ``kinds`` asks for
    nothing but profiles and there are none."""
    try:
        return Profiles(latents)
    except IndexNotFoundError:
        if config.kinds == ["profile"]:
            raise
        logger.warning("the index of %s has no token profiles: no profile explanations, evidence or baselines "
                       "(rebuild it with `actstore index`)", latents.name)
        return None


def _results(jobs: list[Job], config: ExplainConfig, ray_config: RayConfig | None) -> Iterator[tuple[dict[str, Any], int]]:
    if not jobs:
        return
    backend = config.backend
    if not config.needs_llm:  # the embedding scorer alone: no chat model, no actors
        worker = Worker(config)
        yield from (run_job(worker, job, config) for job in jobs)
        return
    if isinstance(backend, OpenAIBackend):
        worker = Worker(config, chat=make_backend(backend))
        with ThreadPoolExecutor(backend.concurrency) as pool:
            yield from pool.map(lambda job: run_job(worker, job, config), jobs)
        return
    ensure_ray(ray_config)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus:
        n, options = max(1, int(gpus / backend.num_gpus)), {"num_gpus": backend.num_gpus, "num_cpus": 1}
    else:  # the free CPUs shared out among the actors (Ray sets an actor's torch threads to its num_cpus)
        free = int(ray.available_resources().get("CPU", 1))
        n, options = backend.cpu_actors, {"num_cpus": max(1, min(cluster_cpus(), free) // backend.cpu_actors)}
    actor = ray.remote(**options)(_Explainer)  # type: ignore[call-overload]
    actors = [actor.remote(config) for _ in range(min(n, len(jobs)))]
    try:
        with unwrapped_errors():
            yield from run_on_pool(actors, "run", jobs)
    finally:
        for a in actors:
            ray.kill(a)
