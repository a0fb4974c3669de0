"""Connecting to Ray: the cluster at ``address`` / ``RAY_ADDRESS``, or a local one."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import ray

from actstore.config import RayConfig
from actstore.errors import ActstoreError

__all__ = ["cluster_cpus", "drain", "ensure_ray", "run_on_pool", "unwrapped_errors"]

logger = logging.getLogger(__name__)


def ensure_ray(config: RayConfig | None = None) -> None:
    """Initialise Ray once per process: join an existing cluster, or start a local one."""
    if ray.is_initialized():
        return
    config = config or RayConfig()
    address = config.address or os.environ.get("RAY_ADDRESS")
    # Ray workers started here inherit this process's environment (credentials included), so
    # nothing secret needs to travel through task arguments.
    if address:
        logger.info("joining the Ray cluster at %s", address)
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
    else:
        ray.init(num_cpus=config.num_cpus, include_dashboard=False, logging_level=logging.WARNING)


@contextmanager
def unwrapped_errors() -> Iterator[None]:
    """Re-raise actstore errors from remote tasks as themselves, without Ray's wrapping."""
    try:
        yield
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, ActstoreError):
            raise exc.cause from None
        raise


def cluster_cpus() -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def run_on_pool(
    actors: list[Any], method: str, items: Iterable[Any], *, on_result: Callable[[Any], None] | None = None
) -> Iterator[Any]:
    """Call ``actor.method(item)`` for every item, keeping each actor busy with one call at a time.

    Yields results in completion order. An actor's exception propagates (with Ray's traceback).
    """
    pending: dict[Any, Any] = {}
    queue = iter(items)
    idle = list(actors)
    while True:
        while idle:
            item = next(queue, None)
            if item is None:
                break
            actor = idle.pop()
            pending[getattr(actor, method).remote(item)] = actor
        if not pending:
            return
        [ready], _ = ray.wait(list(pending), num_returns=1)
        idle.append(pending.pop(ready))
        result = ray.get(ready)
        if on_result is not None:
            on_result(result)
        yield result


def drain(refs: Iterable[Any], total: int, desc: str, *, progress: bool = False) -> list[Any]:
    """Submit tasks lazily (``refs`` is a generator of ``f.remote(...)``) with twice the
    cluster's CPUs in flight at most; their results in completion order."""
    from tqdm.auto import tqdm

    limit, pending, results = 2 * cluster_cpus(), [], []
    with tqdm(total=total, desc=desc, unit="task", disable=not progress) as bar:
        for ref in refs:
            pending.append(ref)
            if len(pending) >= limit:
                ready, pending = ray.wait(pending, num_returns=1)
                results += ray.get(ready)
                bar.update(len(ready))
        for ref in pending:
            results.append(ray.get(ref))
            bar.update(1)
    return results
