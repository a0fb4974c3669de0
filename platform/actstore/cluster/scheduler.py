"""The unit scheduler: hand unit ids to worker actors, re-run units whose worker died.

Ray gives at-least-once execution; exactly-once *effect* comes from the store: a unit takes
effect when its manifest is written (last), a re-run rewrites the same bytes, and a unit whose
manifest exists is never run again (not even when its worker died just after committing).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import ray

from actstore.cluster.pool import WorkerPool
from actstore.errors import ActstoreError
from actstore.store.runs import UnitCounts

__all__ = ["run_units"]

logger = logging.getLogger(__name__)

GROW_EVERY_S = 2.0  # how often the pool is asked whether the cluster holds more workers now
PING_TRIES = 600  # x 0.2 s: how long a restarting worker may take to load its model again


class _Workers:
    """The scheduler's view of the pool: which actors may take units (slots), which are starting
    or restarting (pings), and each worker's description with the seconds it joined and left."""

    def __init__(self, pool: WorkerPool, in_flight: int, on_join: Callable[[dict[str, Any]], None] | None) -> None:
        self.pool, self.in_flight, self.on_join = pool, in_flight, on_join
        self.t0 = time.monotonic()
        self.slots: list[Any] = []
        self.pings: dict[Any, tuple[Any, int, int]] = {}  # ref -> (actor, slots it frees, tries)
        self.described: dict[int, dict[str, Any]] = {}  # id(actor) -> its latest description
        self.failures: dict[int, int] = {}  # id(actor) -> calls failed by its deaths

    def grow(self, waiting_units: int) -> None:
        for actor in self.pool.grow(waiting_units):
            self.ping(actor, self.in_flight)

    def ping(self, actor: Any, slots: int, tries: int = 0) -> None:
        """Ask the actor to describe itself; when it answers (started, or restarted after a
        death) it gets ``slots`` calls."""
        self.pings[actor.describe.remote()] = (actor, slots, tries)

    def answer(self, ref: Any) -> None:
        """A ping came back: the actor takes units again, or is asked again while it restarts."""
        actor, slots, tries = self.pings.pop(ref)
        try:
            description = dict(ray.get(ref))
        except ray.exceptions.RayActorError as exc:
            if exc.actor_init_failed:
                raise  # a worker that cannot load its model: the run stops with the worker's error
            if tries < PING_TRIES:
                time.sleep(0.2)
                self.ping(actor, slots, tries + 1)
            else:
                self.retire(actor)
            return
        self.slots += [actor] * slots
        last = self.described.get(id(actor))
        if last is not None and (last["host"], last["pid"]) == (description["host"], description["pid"]):
            last.pop("left_s", None)  # the same process answered again: it never left
            return
        description["joined_s"] = round(time.monotonic() - self.t0, 2)
        self.described[id(actor)] = description
        if self.on_join is not None:
            self.on_join(description)

    def died(self, actor: Any, unit: int, exc: Exception, stats: UnitCounts, max_failures: int) -> None:
        """A call failed because its actor died (its process, or its node, went away): note when,
        count it, and ping the actor while Ray restarts it, or give it up once it has failed more
        than ``max_failures`` times (its restarts are spent: the pool may start another)."""
        last = self.described.get(id(actor))
        if last is not None:
            last.setdefault("left_s", round(time.monotonic() - self.t0, 2))
        stats.worker_deaths += 1
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        stats.failures.append(f"unit {unit}: worker died ({reason})")
        self.failures[id(actor)] = self.failures.get(id(actor), 0) + 1
        if self.failures[id(actor)] <= max_failures:
            self.ping(actor, 1)
        else:
            self.retire(actor)

    def finish(self) -> None:
        """The stage is done: every worker leaves now (the driver kills them)."""
        for description in self.described.values():
            description.setdefault("left_s", round(time.monotonic() - self.t0, 2))

    def retire(self, actor: Any) -> None:
        """Give up on the actor: no more units or pings for it (the pool may start another)."""
        self.pings = {ref: entry for ref, entry in self.pings.items() if entry[0] is not actor}
        self.slots = [a for a in self.slots if a is not actor]
        self.pool.retire(actor)

    def drop_unstarted(self) -> None:
        """No unit waits: workers still starting for the first time would load a model for
        nothing (and keep an autoscaler adding nodes for them)."""
        for actor, _, _ in list(self.pings.values()):
            if id(actor) not in self.described:
                self.retire(actor)


def run_units(
    pool: WorkerPool,
    todo: list[int],
    stats: UnitCounts,
    *,
    in_flight: int,
    is_done: Callable[[int], bool],
    max_attempts: int,
    max_actor_failures: int,
    on_unit: Callable[[Any], None] | None = None,
    on_join: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Run ``actor.run(unit)`` for every unit of ``todo`` on the pool's workers, ``in_flight``
    calls per worker at a time, counting what happens in ``stats`` (a run record).

    Workers take units once they answer (model loaded); every ``GROW_EVERY_S`` the pool may
    start more (GPUs or CPUs joined), and ``on_join`` gets each new worker's description. A
    call that fails because its worker died (``RayActorError``: the process, or its node, went
    away) is re-queued, unless the unit's manifest exists by now; Ray restarts the worker, and it
    takes units again once it answers. A unit failing ``max_attempts`` times, or every worker
    failing more than ``max_actor_failures`` times, ends the run with an error, and so does an
    exception raised inside a unit (bad data, a permanent storage error).
    """
    queue: deque[int] = deque(todo)
    attempts: dict[int, int] = {}
    workers = _Workers(pool, in_flight, on_join)
    running: dict[Any, tuple[Any, int]] = {}
    workers.grow(len(queue))
    next_grow = time.monotonic() + GROW_EVERY_S
    while queue or running:
        while workers.slots and queue:
            actor, unit = workers.slots.pop(), queue.popleft()
            running[actor.run.remote(unit)] = (actor, unit)
        if time.monotonic() >= next_grow or not (running or workers.pings):
            if not workers.slots:
                workers.grow(len(queue))
            next_grow = time.monotonic() + GROW_EVERY_S
        if not queue:
            workers.drop_unstarted()
        if not running and not workers.pings:
            raise ActstoreError(f"every worker failed more than {max_actor_failures} times; failures: {stats.failures[-5:]}")
        ready, _ = ray.wait([*running, *workers.pings], num_returns=1, timeout=GROW_EVERY_S)
        if not ready:
            continue
        if ready[0] in workers.pings:
            workers.answer(ready[0])
            continue
        actor, unit = running.pop(ready[0])
        try:
            report = ray.get(ready[0])
        except ray.exceptions.RayActorError as exc:
            workers.died(actor, unit, exc, stats, max_actor_failures)
            if is_done(unit):
                logger.warning("unit %d was committed before its worker died; not re-running it", unit)
                continue
            attempts[unit] = attempts.get(unit, 0) + 1
            if attempts[unit] >= max_attempts:
                raise ActstoreError(f"unit {unit} failed {attempts[unit]} times: {stats.failures[-3:]}") from None
            logger.warning("worker died while running unit %d; re-queueing it (attempt %d)", unit, attempts[unit] + 1)
            stats.units_retried += 1
            queue.appendleft(unit)
            continue
        workers.slots.append(actor)
        _count(stats, report)
        if on_unit is not None:
            on_unit(report)
    workers.finish()


def _count(stats: UnitCounts, report: Any) -> None:
    """Add a finished unit's report to the run's counts."""
    stats.units_run += 1
    stats.tokens += int(getattr(report, "n_tokens", 0))
    stats.storage_retries += int(getattr(report, "storage_retries", 0))
    stats.compute_seconds += float(getattr(report, "compute_seconds", 0.0))
    stats.write_seconds += float(getattr(report, "write_seconds", 0.0))
