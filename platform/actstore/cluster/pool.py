"""The extraction's worker actors: how many the cluster holds, and more as it grows.

One worker per GPU (``workers.num_gpus`` each), or per CPU on a CPU-only cluster. With
``workers.num_workers`` the count is fixed. Otherwise the pool follows the cluster: the scheduler
asks it every few seconds, and it starts a worker for each GPU (CPU) that joined since, as long as
units are waiting. With ``workers.max_workers`` it asks for that many at once: Ray places those the
cluster holds and keeps the others pending, which is the demand an autoscaler (KubeRay's
``enableInTreeAutoscaling``) adds nodes for. A worker whose node goes away dies with it; Ray
restarts it wherever there is room, and the scheduler re-runs its unit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray

from actstore.config import WorkersConfig
from actstore.errors import ActstoreError

__all__ = ["WorkerLayout", "WorkerPool", "worker_layout"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerLayout:
    """What one worker reserves, and how many workers to run."""

    num_gpus: float  # GPUs per worker (0: CPU workers)
    num_cpus: float  # CPUs per worker
    fixed: int | None = None  # workers.num_workers
    limit: int | None = None  # workers.max_workers

    def fit(self) -> int:
        """Workers the cluster's resources hold now (its totals: the job is taken to own the cluster)."""
        resources = ray.cluster_resources()
        if self.num_gpus:
            return int(float(resources.get("GPU", 0)) // self.num_gpus)
        return int(float(resources.get("CPU", 0)) // self.num_cpus)

    def target(self) -> int:
        """Workers wanted now: the fixed count, the limit, or as many as fit."""
        if self.fixed is not None:
            return self.fixed
        return self.limit if self.limit is not None else self.fit()


def worker_layout(workers: WorkersConfig) -> WorkerLayout:
    """The layout from the config and the cluster: GPU workers when the cluster has GPUs (or
    ``num_gpus`` says so), else CPU workers. A cluster that cannot hold one worker, with nothing
    asking for more (``num_workers``, ``max_workers``), is refused before any work."""
    gpus_total = float(ray.cluster_resources().get("GPU", 0))
    num_gpus = workers.num_gpus if workers.num_gpus is not None else (1.0 if gpus_total else 0.0)
    layout = WorkerLayout(num_gpus, workers.num_cpus, workers.num_workers, workers.max_workers)
    if layout.target() == 0:
        kind = f"{num_gpus:g} GPU" if num_gpus else f"{workers.num_cpus:g} CPU"
        raise ActstoreError(f"the Ray cluster cannot hold one worker of {kind} (it has {ray.cluster_resources()}); "
                            "add nodes, or set workers.max_workers (--max-workers) so that an autoscaler adds them")
    return layout


class WorkerPool:
    """The live worker actors of one stage; :meth:`grow` starts more when the layout allows."""

    def __init__(self, layout: WorkerLayout, spawn: Callable[[], Any]) -> None:
        self.layout, self._spawn = layout, spawn
        self.actors: list[Any] = []  # every actor started, for the final kill
        self._live: set[int] = set()  # ids of those not given up on

    def grow(self, waiting_units: int) -> list[Any]:
        """Start workers up to the layout's target, no more than there are units waiting."""
        if waiting_units <= 0:
            return []
        target = self.layout.target()
        started = [self._spawn() for _ in range(min(target - len(self._live), waiting_units))]
        if started and self.actors:
            logger.info("the cluster holds %d workers now: starting %d more", target, len(started))
        self.actors += started
        self._live |= {id(a) for a in started}
        return started

    def retire(self, actor: Any) -> None:
        """Give up on an actor (its restarts are spent, or it is no longer needed): it stops
        counting, so a later :meth:`grow` may replace it."""
        self._live.discard(id(actor))
        ray.kill(actor)

    def kill_all(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
