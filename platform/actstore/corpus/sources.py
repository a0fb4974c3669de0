"""Corpus sources: expand configured paths and globs into a sorted list of readable files."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from fsspec.core import url_to_fs

from actstore.errors import CorpusError, StorageAccessError

__all__ = ["SourceFile", "detect_format", "expand_sources"]

Format = Literal["jsonl", "parquet", "text"]


@dataclass(frozen=True)
class SourceFile:
    """One corpus file: its URL (protocol kept for remote files), format and compression."""

    url: str
    format: Format
    compression: str | None


def detect_format(url: str, configured: str) -> tuple[Format, str | None]:
    """Format and compression of a file from its name (or the configured format)."""
    name = url.lower()
    compression = None
    for suffix, comp in ((".gz", "gzip"), (".zst", "zstd"), (".zstd", "zstd")):
        if name.endswith(suffix):
            compression, name = comp, name[: -len(suffix)]
    if configured != "auto":
        return configured, compression  # type: ignore[return-value]
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl", compression
    if name.endswith(".parquet"):
        return "parquet", compression
    return "text", compression


def expand_sources(paths: list[str], *, fmt: str = "auto", storage_options: dict[str, Any] | None = None) -> list[SourceFile]:
    """Expand paths and globs; every pattern must match at least one file.

    The result is sorted by URL (and de-duplicated), so document order is independent of
    listing order and of how many workers read the files.
    """
    found: dict[str, SourceFile] = {}
    for pattern in paths:
        try:
            fs, _ = url_to_fs(pattern, **(storage_options or {}))
            protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
            matches = [m for m in fs.glob(pattern) if fs.isfile(m)] if any(c in pattern for c in "*?[") else []
            if not matches:
                if not fs.exists(pattern):
                    raise CorpusError(f"corpus path {pattern!r} matches no file")
                if not fs.isfile(pattern):
                    raise CorpusError(f"corpus path {pattern!r} is a directory; use a glob such as {pattern.rstrip('/')}/**/*.jsonl")
                matches = [pattern]
        except PermissionError as exc:
            raise StorageAccessError(f"cannot list corpus path {pattern!r}: access denied ({exc})") from None
        for match in matches:
            url = match if "://" in match or protocol in ("file", "local") else f"{protocol}://{match}"
            if protocol in ("file", "local"):
                url = fs._strip_protocol(match)
            file_format, compression = detect_format(url, fmt)
            found[url] = SourceFile(url, file_format, compression)
    if not found:
        raise CorpusError(f"the corpus is empty: no file matched {paths}")
    return [found[k] for k in sorted(found)]
