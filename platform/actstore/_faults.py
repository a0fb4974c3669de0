"""A test-only fault switch: kill this process at a named point of a unit's work, once.

Set ``ACTSTORE_FAULTS="<point>:<unit>:<marker folder>"`` (the driver hands it to its workers).
The first process to reach ``<point>`` for ``<unit>`` creates a marker file and dies at once
with ``os._exit`` (no cleanup, like a killed pod); later attempts find the marker and go on.
Points: ``mid_unit`` (after the first forward batch), ``between_shards`` (after the first shard
write), ``before_manifest`` (all shards written, manifest not yet). ``ACTSTORE_UNIT_DELAY_S``
slows every unit down, so that a test can kill a driver while units are still running, and
``ACTSTORE_UNIT_GATE=<file>`` holds every unit before its manifest while that file exists, so
that a test can change the cluster while units are known to be in flight.
"""

from __future__ import annotations

import os
import time

__all__ = ["DELAY_ENV", "ENV", "GATE_ENV", "fault_point", "hold", "test_environment"]

ENV = "ACTSTORE_FAULTS"
DELAY_ENV = "ACTSTORE_UNIT_DELAY_S"  # seconds a worker waits before each manifest (to kill a driver mid-run)
GATE_ENV = "ACTSTORE_UNIT_GATE"  # a file: while it exists, workers wait before each manifest


def test_environment() -> dict[str, str]:
    """The test switches set in this process, to hand to worker actors."""
    return {k: os.environ[k] for k in (ENV, DELAY_ENV, GATE_ENV) if os.environ.get(k)}


def hold(delay_s: float) -> None:
    """Wait ``delay_s`` seconds, then while the gate file exists (both unset: return at once)."""
    time.sleep(delay_s)
    gate = os.environ.get(GATE_ENV)
    while gate and os.path.exists(gate):
        time.sleep(0.05)


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
