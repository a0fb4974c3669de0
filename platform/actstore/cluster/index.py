"""Building an SAE's feature-major index with Ray tasks: map per unit, reduce per bucket.

Every task owns its outputs (a staging object per unit, a group of arrays per bucket) and
commits a manifest last, so a retried task rewrites the same bytes and a rerun skips what is
done. The plan (units covered, buckets, completion) is kept in the index group's attributes, not
in the root metadata, which only the extraction coordinator writes: a rerun with the same plan
resumes; once more units are committed, a rerun starts a new build covering them.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import ray

from actstore.cluster.profile import count_profile_corpus
from actstore.cluster.runtime import drain, ensure_ray, unwrapped_errors
from actstore.config import RayConfig
from actstore.index.build import BLOCK, BUCKET_NNZ, map_unit, plan_index
from actstore.index.layout import INDEX_ATTRIBUTE, IndexPlan, index_group, index_stage, map_stage
from actstore.index.profile import create_profile_arrays
from actstore.index.reduce import reduce_bucket
from actstore.store._fs import Location
from actstore.store.store import Store

__all__ = ["keep_logits", "run_index"]

logger = logging.getLogger(__name__)
TASK_RETRIES = 3


def _map(location: Location, plan: IndexPlan, unit: int) -> tuple[int, list[int]]:
    return unit, map_unit(Store.open(location.url, storage_options=location.storage_options, probe=False), plan, unit)


def _reduce(location: Location, plan: IndexPlan, bucket: int, spans: np.ndarray, limit: int) -> int:
    store = Store.open(location.url, storage_options=location.storage_options, mode="r+", probe=False)
    return reduce_bucket(store, plan, bucket, spans, limit=limit)


def run_index(url: str, sae: str, *, storage_options: dict[str, Any] | None = None, bucket_nnz: int = BUCKET_NNZ,
              block: int | None = None, ray_config: RayConfig | None = None, progress: bool = False) -> IndexPlan:
    """Build (or resume, or bring up to date) the index of ``sae`` and return its plan.

    Indexes the extraction units committed when it starts, so it also runs on a store that is
    still being written; run it again later to cover the new units. ``block``: occurrences per
    block (default: the existing index's, else :data:`BLOCK`); an index in the older layout, or
    with another block, is built again.
    """
    store = Store.open(url, storage_options=storage_options, mode="r+")
    plan = _current_plan(store, sae)
    fresh = plan_index(store, sae, bucket_nnz=bucket_nnz, block=block or (plan.block if plan is not None else None) or BLOCK)
    # new units, an older layout, another block, or an index built before token profiles: built again
    same = plan is not None and (plan.units, plan.block, plan.profile_top) == (fresh.units, fresh.block, fresh.profile_top)
    if plan is not None and plan.complete and same:
        return plan
    if plan is None or not same:
        plan = _start_build(store, fresh)
    ensure_ray(ray_config)
    location = store.location
    with unwrapped_errors():
        counts = _run_maps(store, plan, progress)
        done = set(store.manifests.done(index_stage(sae)))
        todo = [b for b in range(plan.n_buckets) if b not in done]
        # [units, buckets]: where each bucket's entries start in each unit's staged object, and how many
        by_unit = np.array([counts[u] for u in plan.units], np.int64).reshape(len(plan.units), plan.n_buckets)
        starts = np.cumsum(by_unit, axis=1) - by_unit
        reduce = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(_reduce)
        drain((reduce.remote(location, plan, b, np.stack([starts[:, b], by_unit[:, b]], axis=1), bucket_nnz) for b in todo),
              len(todo), "index reduce", progress=progress)
        count_profile_corpus(store, plan, progress=progress)
    nnz = sum(store.manifests.read(index_stage(sae), b)["nnz"] for b in range(plan.n_buckets))
    return _finish(store, plan.model_copy(update={"nnz": nnz, "complete": True}))


def keep_logits(store: Store, saes: list[str]) -> str:
    """After an index build: keep the SAEs' output logits when the model and their files are on
    this machine (:func:`actstore.live.logits.keep_logits_if_reachable`); what was done, as a line."""
    from actstore.live.logits import keep_logits_if_reachable

    return keep_logits_if_reachable(store, saes)


def _current_plan(store: Store, sae: str) -> IndexPlan | None:
    try:
        group = store.group[index_group(sae)]
    except KeyError:
        return None
    raw = group.attrs.get(INDEX_ATTRIBUTE)
    return None if raw is None else IndexPlan.model_validate(raw)


def _start_build(store: Store, plan: IndexPlan) -> IndexPlan:
    """Forget an older build (its manifests and staging) and record the new plan."""
    for stage in (map_stage(plan.sae), index_stage(plan.sae)):
        store.manifests.clear(stage)
    store.files.remove(f"_staging/index/{plan.sae}")
    if index_group(plan.sae) in store.group:
        del store.group[index_group(plan.sae)]  # buckets of the older build
    group = store.group.require_group(index_group(plan.sae))
    group.attrs[INDEX_ATTRIBUTE] = plan.model_dump(mode="json")
    create_profile_arrays(store, plan)
    return plan


def _run_maps(store: Store, plan: IndexPlan, progress: bool) -> dict[int, list[int]]:
    """Per-bucket counts of every unit: from manifests of mapped units, from new map tasks otherwise."""
    stage = map_stage(plan.sae)
    done = set(store.manifests.done(stage))
    counts = {u: store.manifests.read(stage, u)["counts"] for u in plan.units if u in done}
    todo = [u for u in plan.units if u not in done]
    task = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(_map)
    for unit, unit_counts in drain((task.remote(store.location, plan, u) for u in todo), len(todo), "index map", progress=progress):
        counts[unit] = unit_counts
    return counts


def _finish(store: Store, plan: IndexPlan) -> IndexPlan:
    store.group[index_group(plan.sae)].attrs[INDEX_ATTRIBUTE] = plan.model_dump(mode="json")
    store.files.remove(f"_staging/index/{plan.sae}")
    return plan

