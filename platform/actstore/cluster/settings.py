"""Comparing a job's settings with those a store was made with, and redacting secrets."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from actstore.store._fs import redact_storage_options

__all__ = ["redacted_config", "settings_differences"]

# Fields that may change between runs of the same store without changing its content.
_FREE = {"ray", "store", "workers", "corpus.storage_options"}


def redacted_config(config: BaseModel) -> dict[str, Any]:
    """The config as JSON data, every storage_options mapping redacted."""
    return _redact(config.model_dump(mode="json"))


def _redact(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: redact_storage_options(v) if k == "storage_options" and isinstance(v, dict) else _redact(v)
                for k, v in node.items()}
    if isinstance(node, list):
        return [_redact(v) for v in node]
    return node


def settings_differences(old: dict[str, Any], new: dict[str, Any], *, kind: str, prefix: str = "") -> list[str]:
    """Human-readable differences between two redacted configs, ignoring run-only fields."""
    out: list[str] = []
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}{key}"
        if path in _FREE:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(settings_differences(a, b, kind=kind, prefix=f"{path}."))
        elif a != b:
            out.append(f"{kind} {path}: store has {a!r}, now {b!r}")
    return out
