"""A test-only fault switch: kill this process at a named point of a unit's work, once.

Set ``ACTSTORE_FAULTS="<point>:<unit>:<marker folder>"`` (the driver hands it to its workers).
The first process to reach ``<point>`` for ``<unit>`` creates a marker file and dies at once
with ``os._exit`` (no cleanup, like a killed pod); later attempts find the marker and go on.
Points: ``mid_unit`` (after the first forward batch), ``between_shards`` (after the first shard
write), ``before_manifest`` (all shards written, manifest not yet). ``ACTSTORE_UNIT_DELAY_S``
slows every unit down, so that a test can kill a driver while units are still running.
"""

from __future__ import annotations

import os

__all__ = ["DELAY_ENV", "ENV", "fault_point", "test_environment"]

ENV = "ACTSTORE_FAULTS"
DELAY_ENV = "ACTSTORE_UNIT_DELAY_S"  # seconds a worker waits before each manifest (to kill a driver mid-run)


def test_environment() -> dict[str, str]:
    """The test switches set in this process, to hand to worker actors."""
    return {k: os.environ[k] for k in (ENV, DELAY_ENV) if os.environ.get(k)}


def fault_point(point: str, unit: int) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    want, want_unit, marker_dir = spec.split(":", 2)
    if want != point or int(want_unit) != unit:
        return
    try:
        fd = os.open(os.path.join(marker_dir, f"{point}-{unit}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.close(fd)
    os._exit(17)
