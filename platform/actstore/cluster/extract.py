"""The extraction job on Ray: validate, ingest if needed, run worker actors over units, finalize.

One :class:`_Worker` actor per GPU (or per CPU on a CPU-only cluster) loads the model and SAEs
once and pulls unit ids from the driver. A unit is committed by its manifest, written last;
units already committed are skipped, so a resubmitted job resumes where it stopped.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from typing import Any

import ray
from tqdm.auto import tqdm

from actstore.cluster.ingest import _unwrapped_errors, run_ingest
from actstore.cluster.runtime import ensure_ray
from actstore.cluster.settings import redacted_config, settings_differences
from actstore.config import ExtractConfig
from actstore.errors import ActstoreError, StoreMismatchError
from actstore.extraction.plan import ExtractPlan, plan_extraction
from actstore.extraction.unit import EXTRACT_STAGE, UnitReport
from actstore.saes.formats import SAEWeights
from actstore.store._fs import Location, check_access
from actstore.store.layout import activation_array, code_array, create_unit_array
from actstore.store.metadata import StageInfo
from actstore.store.stats import create_stats_arrays, merge_stats
from actstore.store.store import Store, utc_now

__all__ = ["run_extract"]

logger = logging.getLogger(__name__)
MAX_UNIT_ATTEMPTS = 3


class _Worker:
    """A Ray actor holding the model and the SAEs on its device."""

    def __init__(self, plan: ExtractPlan, location: Location, weights: dict[str, SAEWeights]) -> None:
        import torch

        from actstore.models.loading import load_model
        from actstore.saes.encode import SAEEncoder

        self.device = torch.device("cuda" if plan.device == "cuda" else "cpu")
        threads = plan.config.workers.torch_threads or max(1, int(plan.config.workers.num_cpus))
        if self.device.type == "cpu":
            torch.set_num_threads(threads)
        from actstore.extraction.unit import UnitRunner

        model = load_model(plan.config.model, dtype=plan.model_dtype, device=str(self.device),
                           attn_implementation=plan.attn_implementation)
        encoders = {name: SAEEncoder(w, self.device) for name, w in weights.items()}
        store = Store.open(location.url, storage_options=location.storage_options, mode="r+")
        self.runner = UnitRunner(store, plan, model, encoders, self.device)

    def describe(self) -> dict[str, Any]:
        import torch

        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        return {"host": socket.gethostname(), "pid": os.getpid(), "device": str(self.device), "device_name": name}

    def run(self, unit: int) -> UnitReport:
        return self.runner.run(unit)


def _worker_layout(config: ExtractConfig) -> tuple[int, float, float, bool]:
    """(workers, gpus per worker, cpus per worker, gpu?) from the config and the cluster."""
    resources = ray.cluster_resources()
    gpus_total = float(resources.get("GPU", 0))
    num_gpus = config.workers.num_gpus if config.workers.num_gpus is not None else (1.0 if gpus_total else 0.0)
    num_cpus = config.workers.num_cpus
    if config.workers.num_workers is not None:
        n = config.workers.num_workers
    elif num_gpus:
        n = max(1, int(gpus_total // num_gpus))
    else:
        n = max(1, int(float(resources.get("CPU", 1)) // num_cpus))
    return n, num_gpus, num_cpus, num_gpus > 0


def run_extract(config: ExtractConfig, *, progress: bool = False) -> Store:
    """Run (or resume) an extraction and return the finalized store."""
    location = Location(config.store.url, dict(config.store.storage_options))
    check_access(location, write=True)
    ensure_ray(config.ray)
    n_workers, num_gpus, num_cpus, gpu = _worker_layout(config)
    plan, weights = plan_extraction(config, gpu_workers=gpu)  # every check before any work
    store = run_ingest(config.ingest_config(), progress=progress)
    _prepare_store(store, plan)
    todo = sorted(set(range(store.meta.n_units)) - set(store.units_done(EXTRACT_STAGE)))
    if todo:
        with _unwrapped_errors():
            _run_units(store, plan, weights, todo, n_workers, num_gpus, num_cpus, progress)
    return finalize_extract(store, plan)


def _prepare_store(store: Store, plan: ExtractPlan) -> None:
    """Create the extraction arrays once; on resume, refuse a different model, SAE or site set."""
    new = {"model": plan.model_meta, "sites": [s.model_dump() for s in plan.sites],
           "saes": [s.model_dump() for s in plan.saes]}
    if EXTRACT_STAGE in store.meta.stages:
        old = {"model": store.meta.model, "sites": [s.model_dump() for s in store.meta.sites],
               "saes": [s.model_dump() for s in store.meta.saes]}
        differences = settings_differences(_keyed(old), _keyed(new), kind="extract")
        if differences:
            raise StoreMismatchError(f"the store at {store.location.url!r} was extracted differently: "
                                     + "; ".join(differences) + ". Use a new store URL.")
        return
    grid = store.grid
    for site in plan.sites:
        if site.stored:
            create_unit_array(store.group, activation_array(site.name), grid, (site.d,), site.dtype,
                              compression=site.compression, attributes={"axes": ["ctx", "pos", "d"], "site": site.name})
    for sae in plan.saes:
        create_unit_array(store.group, code_array(sae.name, "idx"), grid, (sae.code_cap,), "int32", fill_value=-1,
                          attributes={"axes": ["ctx", "pos", "slot"], "sae": sae.name})
        create_unit_array(store.group, code_array(sae.name, "val"), grid, (sae.code_cap,), sae.value_dtype,
                          attributes={"axes": ["ctx", "pos", "slot"], "sae": sae.name})
        create_unit_array(store.group, code_array(sae.name, "l0"), grid, (), "int32",
                          attributes={"axes": ["ctx", "pos"], "sae": sae.name})
    create_stats_arrays(store.group, grid, {s.name: s.d for s in plan.sites}, {a.name: a.d_sae for a in plan.saes})
    store.update_meta(model=plan.model_meta, sites=list(plan.sites), saes=list(plan.saes),
                      stages={**store.meta.stages, EXTRACT_STAGE: StageInfo(units_total=store.meta.n_units)},
                      configs={**store.meta.configs, "extract": redacted_config(plan.config)})


def _keyed(d: dict[str, Any]) -> dict[str, Any]:
    """Lists of named entries as mappings, so differences name the site or SAE."""
    return {k: ({e["name"]: e for e in v} if isinstance(v, list) else v) for k, v in d.items()}


def _run_units(store: Store, plan: ExtractPlan, weights: dict[str, SAEWeights], todo: list[int],
               n_workers: int, num_gpus: float, num_cpus: float, progress: bool) -> None:
    weights_ref = ray.put(weights)  # a top-level argument, so each actor receives the dict itself
    # With 2 units in flight an actor computes one while writing the other (UnitRunner's lock).
    actor_cls = ray.remote(num_gpus=num_gpus, num_cpus=num_cpus, max_concurrency=plan.units_in_flight)(_Worker)  # type: ignore[call-overload]
    n = min(n_workers, len(todo))
    actors = [actor_cls.remote(plan, store.location, weights_ref) for _ in range(n)]
    queue: deque[int] = deque(todo)
    attempts: dict[int, int] = {}
    running: dict[Any, tuple[Any, int]] = {}
    tokens, t0 = 0, time.perf_counter()
    bar = tqdm(total=len(todo), desc="extract", unit="unit", disable=not progress)
    try:
        idle = [a for a in actors for _ in range(plan.units_in_flight)]  # one slot per unit in flight
        while queue or running:
            while idle and queue:
                actor, unit = idle.pop(), queue.popleft()
                running[actor.run.remote(unit)] = (actor, unit)  # type: ignore[attr-defined]
            if not running:
                raise ActstoreError("every extraction worker died; see the worker logs above")
            [ready], _ = ray.wait(list(running), num_returns=1)
            actor, unit = running.pop(ready)
            try:
                report: UnitReport = ray.get(ready)
            except ray.exceptions.RayActorError:
                logger.warning("a worker died while running unit %d; re-queueing it", unit)
                attempts[unit] = attempts.get(unit, 0) + 1
                if attempts[unit] >= MAX_UNIT_ATTEMPTS:
                    raise ActstoreError(f"unit {unit} failed {attempts[unit]} times (workers died); giving up") from None
                queue.appendleft(unit)
                idle = [a for a in idle if a is not actor]  # the dead actor gets no more units
                continue
            idle.append(actor)
            tokens += report.n_tokens
            bar.update(1)
            bar.set_postfix(tok_s=f"{tokens / (time.perf_counter() - t0):,.0f}")
    finally:
        bar.close()
        for actor in actors:
            ray.kill(actor)  # type: ignore[arg-type]


def finalize_extract(store: Store, plan: ExtractPlan) -> Store:
    """Merge per-unit statistics and mark the extraction complete (only when every unit is done)."""
    done = store.units_done(EXTRACT_STAGE)
    if len(done) < store.meta.n_units:
        logger.warning("%s: %d of %d units done; not finalizing", store.location.url, len(done), store.meta.n_units)
        return store
    merge_stats(store.group, done, [s.name for s in plan.sites], [a.name for a in plan.saes])
    store.update_meta(stages={**store.meta.stages, EXTRACT_STAGE: StageInfo(
        units_total=store.meta.n_units, complete=True, finalized_at=utc_now())})
    return store
