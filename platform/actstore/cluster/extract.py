"""The extraction job on Ray: validate, ingest if needed, run worker actors over units, finalize.

One :class:`_Worker` actor per GPU (or per CPU on a CPU-only cluster; more as nodes join, see
:mod:`actstore.cluster.pool`) loads the model and SAEs once and pulls unit ids from the driver.
A unit is committed by its manifest, written last; units already committed are skipped, so a
resubmitted job resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
from collections.abc import Sequence
from typing import Any

import ray
from tqdm.auto import tqdm

from actstore._faults import test_environment
from actstore.cluster.index import keep_logits, run_index
from actstore.cluster.ingest import open_existing, run_ingest
from actstore.cluster.pool import WorkerLayout, WorkerPool, worker_layout
from actstore.cluster.preflight import preflight, refuse_other_submission_id
from actstore.cluster.runtime import ensure_ray, unwrapped_errors
from actstore.cluster.scheduler import run_units
from actstore.cluster.settings import redacted_config, settings_differences
from actstore.config import ExtractConfig
from actstore.errors import StoreMismatchError
from actstore.extraction.arrays import create_extract_arrays
from actstore.extraction.plan import ExtractPlan, plan_extraction
from actstore.extraction.stages import (
    added_stages,
    check_first_extraction,
    require_weights,
    stage_plans,
)
from actstore.extraction.tokenizers import refuse_other_tokenizers
from actstore.extraction.unit import UnitReport
from actstore.store._fs import Location
from actstore.store.codes import require_current_codes
from actstore.store.metadata import SaeInfo, SiteInfo, StageInfo
from actstore.store.runs import RunRecord, run_id
from actstore.store.sitenames import BASE
from actstore.store.stats import merge_stats
from actstore.store.store import EXTRACT_STAGE, Store, utc_now

__all__ = ["run_extract"]

logger = logging.getLogger(__name__)
MAX_UNIT_ATTEMPTS = 3
ACTOR_RESTARTS = 3


class _Worker:
    """A Ray actor holding the model and the SAEs' encoders on its device (in groups when they do
    not all fit beside the model: :mod:`actstore.extraction.encoders`)."""

    def __init__(self, plan: ExtractPlan, location: Location, weights: dict[str, ray.ObjectRef],
                 run: str, test_env: dict[str, str]) -> None:
        import torch

        os.environ.update(test_env)  # the test-only fault switches travel from the driver
        from actstore.extraction.encoders import EncoderGroups
        from actstore.extraction.unit import UnitRunner
        from actstore.models.loading import load_model, weights_bytes

        self.device = torch.device("cuda" if plan.device == "cuda" else "cpu")
        threads = plan.config.workers.torch_threads or max(1, int(plan.config.workers.num_cpus))
        if self.device.type == "cpu":
            torch.set_num_threads(threads)
        gpus = int(plan.config.workers.num_gpus or 0) if self.device.type == "cuda" else 0
        spread = [f"cuda:{i}" for i in range(gpus)] if gpus > 1 else None  # Ray shows the actor only its GPUs
        model = load_model(plan.model.source, dtype=plan.model_dtype, device=str(self.device),
                           attn_implementation=plan.attn_implementation, layers=plan.layers_needed, devices=spread)
        # each SAE's weights come from the object store one at a time
        encoders = EncoderGroups.load(plan.saes, lambda name: ray.get(weights[name]), self.device,
                                      _sae_budget(plan, model, self.device))
        self.loaded = {"blocks": plan.layers_needed, "weights_bytes": weights_bytes(model), **encoders.describe()}
        store = Store.open(location.url, storage_options=location.storage_options, mode="r+", backend=location.backend,
                           probe=False)
        self.runner = UnitRunner(store, plan, model, encoders, self.device, run=run)

    def describe(self) -> dict[str, Any]:
        import torch

        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        return {"host": socket.gethostname(), "node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
                "device": str(self.device), "device_name": name, **self.loaded}

    def run(self, unit: int) -> UnitReport:
        return self.runner.run(unit)


def _sae_budget(plan: ExtractPlan, model: Any, device: Any) -> int | None:
    """Bytes the SAE encoders may take on the worker's device: ``workers.sae_memory_gb``, else on
    a GPU what is free once the model is loaded less a batch's working memory; no limit on a CPU."""
    import torch

    from actstore.extraction.encoders import GB, batch_working_bytes, sae_budget

    if plan.config.workers.sae_memory_gb is not None:
        return int(plan.config.workers.sae_memory_gb * GB)
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    working = batch_working_bytes(model.config, batch=plan.config.workers.batch_size, ctx_len=plan.config.context.ctx_len,
                                  captured_d=sum(s.d for s in plan.captured), max_d_sae=max((a.d_sae for a in plan.saes), default=0),
                                  itemsize=torch.tensor([], dtype=model.dtype).element_size())
    return sae_budget(int(free), working, batch=plan.config.workers.batch_size)


def run_extract(config: ExtractConfig, *, progress: bool = False) -> Store:
    """Run (or resume) an extraction and return the finalized store.

    Every check (sites, SAE widths, storage access, settings of an existing store) runs before
    any work. Units already committed are skipped, so a killed job resubmitted with the same
    config resumes and ends with the same arrays as an uninterrupted run.
    """
    location = Location(config.store.url, dict(config.store.storage_options), config.store.backend)
    run = run_id("extract", location.url, redacted_config(config))
    refuse_other_submission_id(run)
    preflight(config, location)
    ensure_ray(config.ray)
    layout = worker_layout(config.workers)
    plan, weights = plan_extraction(config, gpu_workers=layout.num_gpus > 0, keep=lambda _name, w: ray.put(w))
    refuse_other_tokenizers(config, location)
    _refuse_mismatch(location, plan)
    store = run_ingest(config.ingest_config(), progress=progress)
    stages = _prepare_store(store, plan)
    record = RunRecord(run_id=run, kind="extract", started=utc_now())
    try:
        for stage in stages:  # the first extraction, then each stage that added sites or SAEs
            done = set(store.units_done(stage.stage))
            todo = sorted(set(range(store.meta.n_units)) - done)
            record.units_total += store.meta.n_units
            record.units_skipped += len(done)
            if todo:
                require_weights(stage, set(weights))
                with unwrapped_errors():
                    _run_units(store, stage, {a.name: weights[a.name] for a in stage.saes}, todo, layout, record, progress)
            store = finalize_extract(store, stage)
        complete = all(store.meta.stages[s.stage].complete for s in stages)
        if config.index.build and complete:
            for sae in plan.saes:
                run_index(store.location.url, sae.name, storage_options=store.location.storage_options,
                          bucket_nnz=config.index.bucket_nnz, block=config.index.block, progress=progress)
            if config.index.logits:
                logger.info(keep_logits(store, [sae.name for sae in plan.saes]))
        record.status = "complete" if complete else "incomplete"
    except BaseException as exc:
        record.status = "failed"
        record.failures.append(f"{type(exc).__name__}: {str(exc)[:300]}")
        raise
    finally:
        record.ended = utc_now()
        record.save(store.files)
    return store


def _refuse_mismatch(location: Location, plan: ExtractPlan) -> None:
    """An existing store must have been made with the same tokenizer, context and extraction."""
    if not Store.exists(location):
        check_first_extraction(plan, None)
        return
    store = Store.open(location.url, storage_options=location.storage_options, mode="r")
    if plan.saes:
        require_current_codes(store, "extract SAE codes")
    _check_extract_settings(store, plan)
    check_first_extraction(plan, store.meta)
    open_existing(location, plan.config.ingest_config())


def _check_extract_settings(store: Store, plan: ExtractPlan) -> None:
    """Refuse a store extracted with a different model (or a different model under a tag), or whose sites or SAEs the config names
    with other settings (file, width, dtype, ...), naming the difference. Sites and SAEs the
    store lacks are new (a later stage adds them); those the config leaves out are kept."""
    if EXTRACT_STAGE not in store.meta.stages:
        return
    stored = {"sites": _keyed(store.meta.sites), "saes": _keyed(store.meta.saes)}
    wanted = {"sites": _keyed(plan.sites), "saes": _keyed(plan.saes)}
    tags = store.meta.models.keys() & plan.models.keys()
    old: dict[str, Any] = {"model": store.meta.model, "models": {t: store.meta.models[t] for t in tags}}
    new: dict[str, Any] = {"model": plan.models[BASE].meta, "models": {t: plan.models[t].meta for t in tags}}
    for kind in ("sites", "saes"):
        both = stored[kind].keys() & wanted[kind].keys()
        old[kind] = {name: stored[kind][name] for name in both}
        new[kind] = {name: wanted[kind][name] for name in both}
    differences = settings_differences(old, new, kind="extract")
    if differences:
        raise StoreMismatchError(f"the store at {store.location.url!r} was extracted differently: "
                                 + "; ".join(differences) + ". Use a new store URL or a new site/SAE name, "
                                 "or the original config to resume.")


def _prepare_store(store: Store, plan: ExtractPlan) -> list[ExtractPlan]:
    """Create the arrays of the first extraction, or of a new stage for sites and SAEs the store
    lacks (coordinator only; a resumed run finds them in place). Returns every extraction stage's plan."""
    if EXTRACT_STAGE in store.meta.stages:
        _check_extract_settings(store, plan)
    for added in added_stages(plan, store.meta):
        create_extract_arrays(store, added, config_record=redacted_config(plan.config))
    return stage_plans(plan, store.meta)


def _keyed(entries: Sequence[SiteInfo | SaeInfo]) -> dict[str, dict[str, Any]]:
    """Named entries as mappings without their stage, so differences name the site or SAE; an
    SAE is the same wherever its files lie (its sha256 says whether they are the same files)."""
    return {e.name: e.model_dump(exclude={"stage", "source", "origin", "revision", "file"}) for e in entries}


def _run_units(store: Store, plan: ExtractPlan, weights: dict[str, ray.ObjectRef], todo: list[int],
               layout: WorkerLayout, record: RunRecord, progress: bool) -> None:
    # With 2 units in flight an actor computes one while writing the other (UnitRunner's lock).
    actor_cls = ray.remote(num_gpus=layout.num_gpus, num_cpus=layout.num_cpus,  # type: ignore[call-overload]
                           max_concurrency=plan.units_in_flight, max_restarts=ACTOR_RESTARTS, max_task_retries=0)(_Worker)
    location = dataclasses.replace(store.location, backend=plan.config.store.backend)  # workers write through it
    pool = WorkerPool(layout, lambda: actor_cls.remote(plan, location, weights, record.attempt, test_environment()))
    t0, tokens, joined = time.perf_counter(), [0], []
    bar = tqdm(total=len(todo), desc="extract", unit="unit", disable=not progress)

    def on_unit(report: UnitReport) -> None:
        tokens[0] += report.n_tokens
        bar.update(1)
        bar.set_postfix(tok_s=f"{tokens[0] / max(time.perf_counter() - t0, 1e-9):,.0f}")

    def on_join(worker: dict[str, Any]) -> None:
        joined.append(worker)
        record.workers.append(worker)
        logger.info("worker %s on %s (%s) joined after %.1f s: the first %d blocks, %.2f GB of weights; %d workers",
                    worker["pid"], worker["host"], worker["device_name"], worker["joined_s"], worker["blocks"],
                    worker["weights_bytes"] / 1e9, sum("left_s" not in w for w in joined))
        groups = worker["sae_groups"]
        logger.info("worker %s: %d SAE encoders, %.2f GB, %s", worker["pid"], sum(groups), worker["sae_encoder_bytes"] / 1e9,
                    "on the device" if len(groups) <= 1 else f"{groups[0]} on the device and {sum(groups[1:])} taking "
                    f"turns there in {len(groups) - 1} groups (they do not all fit beside the model)")
        record.save(store.files)  # the record shows the workers as they join

    try:
        run_units(pool, todo, record, in_flight=plan.units_in_flight,
                  is_done=lambda u: store.manifests.is_done(plan.stage, u),
                  max_attempts=MAX_UNIT_ATTEMPTS, max_actor_failures=ACTOR_RESTARTS, on_unit=on_unit, on_join=on_join)
        record.tokens_per_s = record.tokens / max(time.perf_counter() - t0, 1e-9)
        logger.info("%d units in %.1f s on %d workers: workers computed for %.1f s and wrote for %.1f s (summed over units)",
                    record.units_run, time.perf_counter() - t0, len(joined), record.compute_seconds,
                    record.write_seconds)
    finally:
        bar.close()
        pool.kill_all()


def finalize_extract(store: Store, plan: ExtractPlan) -> Store:
    """Merge the stage's per-unit statistics and mark it complete (only when every unit is done;
    a stage already complete is left as it is)."""
    if store.meta.stages[plan.stage].complete:
        return store
    done = store.units_done(plan.stage)
    if len(done) < store.meta.n_units:
        logger.warning("%s: %d of %d units done; not finalizing", store.location.url, len(done), store.meta.n_units)
        return store
    merge_stats(store.group, done, [s.name for s in plan.sites], [a.name for a in plan.saes])
    store.update_meta(stages={**store.meta.stages, plan.stage: StageInfo(
        units_total=store.meta.n_units, complete=True, finalized_at=utc_now())})
    return store
