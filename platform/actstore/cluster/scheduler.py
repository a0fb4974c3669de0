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

from actstore.errors import ActstoreError
from actstore.store.runs import UnitCounts

__all__ = ["run_units", "wait_for_actors"]

logger = logging.getLogger(__name__)


def run_units(
    actors: list[Any],
    todo: list[int],
    stats: UnitCounts,
    *,
    in_flight: int,
    is_done: Callable[[int], bool],
    max_attempts: int,
    max_actor_failures: int,
    on_unit: Callable[[Any], None] | None = None,
) -> None:
    """Run ``actor.run(unit)`` for every unit of ``todo``, ``in_flight`` calls per actor at a time,
    counting what happens in ``stats`` (a run record).

    A call that fails because its actor died (``RayActorError``) is re-queued, unless the unit's
    manifest exists by now. A unit failing ``max_attempts`` times, or every actor failing more
    than ``max_actor_failures`` times, ends the run with an error. An exception raised inside a
    unit (bad data, a permanent storage error) ends the run at once.
    """
    queue: deque[int] = deque(todo)
    attempts: dict[int, int] = {}
    actor_failures: dict[int, int] = {}
    slots = [a for a in actors for _ in range(in_flight)]
    running: dict[Any, tuple[Any, int]] = {}
    pings: dict[Any, tuple[Any, int]] = {}  # a failed call's slot comes back once its actor answers again
    while queue or running:
        while slots and queue:
            actor, unit = slots.pop(), queue.popleft()
            running[actor.run.remote(unit)] = (actor, unit)
        if not running and not pings:
            raise ActstoreError(f"every worker failed more than {max_actor_failures} times; failures: {stats.failures[-5:]}")
        [ready], _ = ray.wait([*running, *pings], num_returns=1)
        if ready in pings:
            _answer_ping(ready, pings, slots)
            continue
        actor, unit = running.pop(ready)
        try:
            report = ray.get(ready)
        except ray.exceptions.RayActorError as exc:
            stats.worker_deaths += 1
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            stats.failures.append(f"unit {unit}: worker died ({reason})")
            actor_failures[id(actor)] = actor_failures.get(id(actor), 0) + 1
            if actor_failures[id(actor)] <= max_actor_failures:  # Ray restarts it; ping before reuse
                pings[actor.describe.remote()] = (actor, 0)
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
        slots.append(actor)
        stats.units_run += 1
        stats.tokens += int(getattr(report, "n_tokens", 0))
        stats.storage_retries += int(getattr(report, "storage_retries", 0))
        stats.compute_seconds += float(getattr(report, "compute_seconds", 0.0))
        stats.write_seconds += float(getattr(report, "write_seconds", 0.0))
        if on_unit is not None:
            on_unit(report)


PING_TRIES = 600  # x 0.2 s: how long a restarting worker may take to load its model again


def _answer_ping(ref: Any, pings: dict[Any, tuple[Any, int]], slots: list[Any]) -> None:
    """A restarted actor answered (its slot is free again) or is still restarting (ask again)."""
    actor, tries = pings.pop(ref)
    try:
        ray.get(ref)
    except ray.exceptions.RayActorError:
        if tries < PING_TRIES:
            time.sleep(0.2)
            pings[actor.describe.remote()] = (actor, tries + 1)
        return
    slots.append(actor)


def wait_for_actors(actors: list[Any], timeout_s: float = 600.0) -> list[dict[str, Any]]:
    """Each actor's description once it has started (model loaded); surfaces load errors early."""
    return list(ray.get([a.describe.remote() for a in actors], timeout=timeout_s))
