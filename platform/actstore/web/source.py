"""The store a browser serves, kept current while it is still being written.

A store that is complete never changes, so it is opened once. One still being written gains
committed units and, at the end, finalized statistics: it is reopened (fresh metadata) when
older than ``refresh_s``, and the query objects built on it are rebuilt with it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from actstore.api import Store, open_store
from actstore.errors import NotFoundError

__all__ = ["StoreSource"]


class StoreSource:
    """Opens a store read-only and hands out its current :class:`Store` and SAE query objects."""

    def __init__(self, url: str, *, storage_options: dict[str, Any] | None = None, refresh_s: float = 5.0) -> None:
        self.url, self.storage_options, self.refresh_s = url, dict(storage_options or {}), refresh_s
        self._lock = threading.Lock()
        self._store = open_store(url, storage_options=self.storage_options, mode="r")
        self._opened = time.monotonic()
        self._latents: dict[str, Any] = {}

    @property
    def store(self) -> Store:
        """The store, reopened first when it is still being written and its view is stale."""
        with self._lock:
            complete = bool(self._store.meta.stages) and all(s.complete for s in self._store.meta.stages.values())
            if not complete and time.monotonic() - self._opened > self.refresh_s:
                self._store = open_store(self.url, storage_options=self.storage_options, mode="r")
                self._opened = time.monotonic()
                self._latents = {}
            return self._store

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
