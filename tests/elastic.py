"""An extraction on a real multi-node local Ray cluster whose nodes join and leave mid-run.

``ray.cluster_utils.Cluster`` starts a head and extra nodes as separate raylets on this machine
(each with its own CPUs as Ray counts them). The driver is a real ``actstore extract`` process
joined to that cluster, as a submitted job's would be. Units are held (``ACTSTORE_UNIT_GATE``) or
slowed down (``ACTSTORE_UNIT_DELAY_S``) so that nodes change while units remain. Used by
tests/cluster/test_faults.py and benchmarks/bench_elastic.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actstore.config import ExtractConfig


@dataclass
class ElasticRun:
    """What happened: the driver's wall time, its run record, and the cluster's events."""

    wall_s: float
    record: dict[str, Any]
    events: list[tuple[float, str]] = field(default_factory=list)

    def workers_over_time(self) -> list[tuple[float, int]]:
        """(seconds after the workers started, workers running) at each join or leave."""
        changes = sorted([(w["joined_s"], 1) for w in self.record["workers"]]
                         + [(w["left_s"], -1) for w in self.record["workers"] if "left_s" in w])
        out, n = [], 0
        for t, step in changes:
            n += step
            out.append((t, n))
        return out


def _manifests(store: Path) -> int:
    return len(list((store / "_manifests" / "extract").glob("*.json")))


def _record(store: Path) -> dict[str, Any] | None:
    runs = sorted((store / "_runs").glob("*.json"))
    try:
        return json.loads(runs[-1].read_text()) if runs else None
    except json.JSONDecodeError:  # being rewritten
        return None


class ElasticDriver:
    """A cluster (a head holding one one-CPU worker) and an ``actstore extract`` driver process on
    it; the caller adds and removes nodes while the driver runs, then calls :meth:`finish`."""

    def __init__(self, config: ExtractConfig, work: Path, env: dict[str, str]) -> None:
        from ray.cluster_utils import Cluster

        self.store, self.work = Path(config.store.url), work
        (work / "elastic-config.json").write_text(config.model_dump_json())
        self.cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        self.events: list[tuple[float, str]] = []
        self.start = time.perf_counter()
        self._log = open(work / "driver.log", "wb")  # noqa: SIM115 (closed in finish)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "actstore.cli", "-v", "extract", str(work / "elastic-config.json"), "-q"],
            env={**os.environ, "RAY_ADDRESS": self.cluster.address, **env}, stdout=self._log, stderr=subprocess.STDOUT)

    def units_done(self) -> int:
        return len(list((self.store / "_manifests" / "extract").glob("*.json")))

    def workers_joined(self) -> int:
        record = _record(self.store)
        return len(record["workers"]) if record else 0

    def wait_for(self, condition: Any, timeout_s: float = 300) -> None:
        """Poll ``condition()`` until it holds; the driver must still run."""
        deadline = time.perf_counter() + timeout_s
        while not condition():
            assert self.process.poll() is None, self._output()[-3000:]
            assert time.perf_counter() < deadline, f"timed out; driver output: {self._output()[-3000:]}"
            time.sleep(0.05)

    def add_node(self) -> Any:
        node = self.cluster.add_node(num_cpus=1)
        self.events.append((round(time.perf_counter() - self.start, 1), f"node added, {self.units_done()} units done"))
        return node

    def remove_node(self, node: Any) -> None:
        self.cluster.remove_node(node)
        self.events.append((round(time.perf_counter() - self.start, 1), f"node removed, {self.units_done()} units done"))

    def finish(self, timeout_s: float = 300) -> ElasticRun:
        """Wait for the driver to end and shut the cluster down; its run record and wall time."""
        try:
            self.process.wait(timeout_s)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            wall = time.perf_counter() - self.start
            self._log.close()
            self.cluster.shutdown()
        assert self.process.returncode == 0, self._output()[-3000:]
        record = _record(self.store)
        assert record is not None
        return ElasticRun(wall, record, self.events)

    def _output(self) -> str:
        self._log.flush()
        return (self.work / "driver.log").read_text(errors="replace")
