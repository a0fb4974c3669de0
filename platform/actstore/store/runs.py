"""Run records: what each job did, kept in the store under ``_runs/``.

A record is written when a job starts (status ``running``) and rewritten when it ends
(``complete`` or ``failed``): start and end times, workers and their devices, units run,
retried and skipped, tokens per second, and the failures seen. A record left ``running``
belongs to a job that was killed.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from actstore.store._fs import SideFiles

__all__ = ["RunRecord", "UnitCounts", "read_run_records", "run_id"]

PREFIX = "_runs"


def run_id(kind: str, store_url: str, config: dict[str, Any]) -> str:
    """A deterministic id of a job (its kind, store and redacted config): the Ray Jobs submission id."""
    digest = hashlib.sha256(json.dumps([kind, store_url, config], sort_keys=True).encode()).hexdigest()[:12]
    return f"actstore-{kind}-{digest}"


@dataclass(kw_only=True)
class UnitCounts:
    """What happened to units while a job ran; the scheduler updates these in place."""

    units_run: int = 0
    units_retried: int = 0
    worker_deaths: int = 0
    tokens: int = 0
    storage_retries: int = 0
    compute_seconds: float = 0.0  # summed over units: forward, encode, statistics (where a worker's time goes)
    write_seconds: float = 0.0  # summed over units: whole-shard writes and manifests
    failures: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class RunRecord(UnitCounts):
    """One job's record."""

    run_id: str
    kind: str
    started: str
    status: str = "running"
    ended: str | None = None
    attempt: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    workers: list[dict[str, Any]] = field(default_factory=list)
    units_total: int = 0
    units_skipped: int = 0
    tokens_per_s: float = 0.0

    @property
    def key(self) -> str:
        return f"{PREFIX}/{self.started.replace(':', '')}-{self.attempt}.json"

    def save(self, files: SideFiles) -> None:
        files.write_json(self.key, asdict(self))


def read_run_records(files: SideFiles) -> list[dict[str, Any]]:
    """Every run record of a store, oldest first."""
    return [files.read_json(f"{PREFIX}/{name}") for name in files.list(PREFIX) if name.endswith(".json")]
