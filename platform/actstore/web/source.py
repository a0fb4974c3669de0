"""The store a browser serves, kept current while it can still change.

A store still being written gains committed units and, at the end, finalized statistics: it is
reopened (fresh metadata) when older than ``refresh_s``. A complete one can still gain things
(an SAE encoded, an index rebuilt, output logits kept): at most every ``refresh_s`` its root
metadata and each SAE's index and logits metadata are read again, and it is reopened when they
changed. Each reopening rebuilds the query objects and advances :attr:`StoreSource.generation`;
with the explanation parts committed (labels are added at any time) it makes the version that
cached pages are keyed by (:meth:`StoreSource.version`).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any

import polars as pl

from actstore.api import Store, open_store
from actstore.errors import NotFoundError
from actstore.explain.table import committed_parts
from actstore.index.layout import index_group
from actstore.store.logits import logits_group

__all__ = ["DOCUMENT_NAMES_KEPT", "StoreSource"]

DOCUMENT_NAMES_KEPT = 100_000  # document names a source keeps (a document is a few hundred bytes here)


class StoreSource:
    """Opens a store read-only and hands out its current :class:`Store` and SAE query objects."""

    def __init__(self, url: str, *, storage_options: dict[str, Any] | None = None, refresh_s: float = 5.0) -> None:
        self.url, self.storage_options, self.refresh_s = url, dict(storage_options or {}), refresh_s
        self._lock = threading.Lock()
        self._store = open_store(url, storage_options=self.storage_options, mode="r")
        self._checked = time.monotonic()
        self._marks = self._metadata_marks()
        self.generation = 0
        self._latents: dict[str, Any] = {}
        self._documents: dict[int, dict[str, Any]] = {}  # names of documents shown, a bounded few

    @property
    def store(self) -> Store:
        """The store, reopened first when it may have changed (see the module's docstring)."""
        with self._lock:
            if time.monotonic() - self._checked > self.refresh_s:
                meta = self._store.meta
                complete = bool(meta.stages) and all(s.complete for s in meta.stages.values())
                marks = self._metadata_marks()
                if not complete or marks != self._marks:
                    self._store = open_store(self.url, storage_options=self.storage_options, mode="r")
                    self._marks, self.generation, self._latents = marks, self.generation + 1, {}
                self._checked = time.monotonic()
            return self._store

    def _metadata_marks(self) -> str:
        """A digest of the root metadata and every SAE's index and logits metadata."""
        keys = ["zarr.json"] + [f"{group(s.name)}/zarr.json" for s in self._store.meta.saes for group in (index_group, logits_group)]
        digest = hashlib.sha256()
        for key in keys:
            try:
                digest.update(self._store.files.read_bytes(key))
            except FileNotFoundError:
                digest.update(b"-")
        return digest.hexdigest()

    def version(self, saes: Sequence[str]) -> tuple[Any, ...]:
        """What a page about ``saes`` depends on that can change: the store's generation and each
        SAE's committed explanation parts (one listing each)."""
        store = self.store
        return (self.generation, *(committed_parts(store, sae) for sae in saes))

    def sae(self, name: str) -> Any:
        """The SAE's query object (``actstore.open(url).sae(name)``), cached with the store."""
        store = self.store
        with self._lock:
            if name not in self._latents:
                names = [s.name for s in store.meta.saes]
                if name not in names:
                    raise NotFoundError(f"the store has no SAE {name!r}; it has {names or 'none'}")
                self._latents[name] = store.sae(name)
            return self._latents[name]

    def document_names(self, docs: list[int]) -> dict[str, dict[str, Any]]:
        """Per document id (as a string: a JSON key) its ``name`` (the corpus key when there was
        one, else the source file's name and row), ``source`` and ``row``. Documents never change
        once ingested, so names read are kept (the last :data:`DOCUMENT_NAMES_KEPT`)."""
        missing = [d for d in docs if d not in self._documents]
        if missing:
            table = self.store.documents()
            have = set(table.collect_schema().names())
            found = (table.filter(pl.col("doc").is_in(missing)).select("doc", "source", "row", "key").collect().to_dicts()
                     if {"source", "row", "key"} <= have else [])
            with self._lock:
                for row in found:
                    name = row["key"] or f"{PurePosixPath(str(row['source'])).name}:{row['row']}"
                    self._documents[int(row["doc"])] = {"name": name, "source": row["source"], "row": row["row"]}
                while len(self._documents) > DOCUMENT_NAMES_KEPT:
                    self._documents.pop(next(iter(self._documents)))
        unnamed = {"name": None, "source": None, "row": None}
        return {str(d): self._documents.get(d, unnamed) for d in docs}
