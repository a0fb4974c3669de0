"""Finished pages and API answers kept for the next request asking the same thing.

A feature page costs ~0.1 s of index reads and rendering; the same page asked again (a reload,
a second tab, a colleague on the same server) is answered from here. Entries are keyed by the
request (path and query) and by the store's version as the browser sees it
(:meth:`actstore.web.source.StoreSource.version`: reopenings, changed metadata, the explanation
parts committed), so a label added or a unit committed is never hidden behind a stale page.
The cache is bounded by the bytes of the bodies it holds, least recently used first out.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import NamedTuple

__all__ = ["CACHE_BYTES", "Cached", "ResponseCache"]

CACHE_BYTES = 64 * 2**20  # per server process


class Cached(NamedTuple):
    """A response body ready to send again."""

    body: bytes
    media_type: str


class ResponseCache:
    """A thread-safe LRU of response bodies, at most ``max_bytes`` of them (an entry larger than
    an eighth of that is not kept)."""

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, Cached] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size(self) -> int:
        """Bytes of the bodies held."""
        return self._bytes

    def get(self, key: Hashable) -> Cached | None:
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return found

    def put(self, key: Hashable, value: Cached) -> None:
        if len(value.body) > self.max_bytes // 8:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            self._bytes -= len(old.body) if old else 0
            self._entries[key] = value
            self._bytes += len(value.body)
            while self._bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= len(dropped.body)
