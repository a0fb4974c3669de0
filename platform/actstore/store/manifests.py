"""Unit manifests: the commit record of a unit.

A unit of a stage is done exactly when ``_manifests/<stage>/<unit:08d>.json`` exists. Workers
write it last, after every shard of the unit; readers list these objects and read only done
units. Rewriting a manifest (a retried unit) is harmless: the shards it vouches for are the
same bytes.
"""

from __future__ import annotations

from typing import Any

from actstore.store._fs import SideFiles

__all__ = ["ManifestBook"]

PREFIX = "_manifests"


class ManifestBook:
    """Reads and writes the manifests of one store."""

    def __init__(self, files: SideFiles) -> None:
        self.files = files

    @staticmethod
    def key(stage: str, unit: int) -> str:
        return f"{PREFIX}/{stage}/{unit:08d}.json"

    def commit(self, stage: str, unit: int, manifest: dict[str, Any]) -> None:
        self.files.write_json(self.key(stage, unit), {"stage": stage, "unit": unit, **manifest})

    def is_done(self, stage: str, unit: int) -> bool:
        return self.files.exists(self.key(stage, unit))

    def done(self, stage: str) -> list[int]:
        """Sorted ids of the stage's done units."""
        return sorted(
            int(name.removesuffix(".json"))
            for name in self.files.list(f"{PREFIX}/{stage}")
            if name.endswith(".json")
        )

    def read(self, stage: str, unit: int) -> dict[str, Any]:
        out: dict[str, Any] = self.files.read_json(self.key(stage, unit))
        return out

    def clear(self, stage: str) -> None:
        self.files.remove(f"{PREFIX}/{stage}")
