"""Retrying storage calls on transient errors, with capped exponential backoff and jitter.

Transient: connection resets, timeouts, 5xx answers (s3fs turns those it does not retry itself
into plain ``OSError``). Permanent, raised at once: permission errors (bad credentials, policy),
missing buckets or keys. A retried write is always a whole object, so retrying is idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from typing import TypeVar

from zarr.abc.store import ByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import WrapperStore

__all__ = ["RETRY_ATTEMPTS", "RetryingStore", "is_transient", "retries_so_far", "retrying", "retrying_async"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

RETRY_ATTEMPTS = 8
_PERMANENT = (PermissionError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError)
_TRANSIENT_NAMES = {"ClientPayloadError", "ServerDisconnectedError", "ClientOSError", "ClientConnectorError",
                    "ReadTimeoutError", "ConnectTimeoutError", "EndpointConnectionError", "ConnectionClosedError",
                    "IncompleteRead", "ResponseParserError"}
_count = 0
_lock = threading.Lock()


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, _PERMANENT):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError, asyncio.TimeoutError, OSError)):
        return True
    return type(exc).__name__ in _TRANSIENT_NAMES


def retries_so_far() -> int:
    """Retries made by this process (for run records)."""
    return _count


def _delay_or_raise(exc: Exception, attempt: int, attempts: int, what: str, base: float, cap: float) -> float:
    """The backoff before the next attempt, or ``exc`` raised when it is permanent or the last."""
    global _count
    if attempt >= attempts or not is_transient(exc):
        raise exc
    delay = min(cap, base * 2 ** (attempt - 1)) * (0.5 + random.random())
    with _lock:
        _count += 1
    logger.warning("%s: %s: %s; retry %d/%d in %.2f s", what, type(exc).__name__, exc, attempt, attempts - 1, delay)
    return delay


def retrying(call: Callable[[], T], what: str, *, attempts: int = RETRY_ATTEMPTS, base: float = 0.1, cap: float = 5.0) -> T:
    """``call()``, retried on transient errors; the last error propagates."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:
            time.sleep(_delay_or_raise(exc, attempt, attempts, what, base, cap))
    raise AssertionError("unreachable")


async def retrying_async(call: Callable[[], Awaitable[T]], what: str, *, attempts: int = RETRY_ATTEMPTS,
                         base: float = 0.1, cap: float = 5.0) -> T:
    """The asynchronous form of :func:`retrying`, for the Zarr store wrapper."""
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except Exception as exc:
            await asyncio.sleep(_delay_or_raise(exc, attempt, attempts, what, base, cap))
    raise AssertionError("unreachable")


class RetryingStore(WrapperStore[Store]):
    """A Zarr store whose reads, writes, existence checks and deletes retry transient errors.

    Every Zarr operation on object storage goes through it: array data, metadata, attributes.
    """

    async def get(self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None) -> Buffer | None:
        return await retrying_async(lambda: self._store.get(key, prototype, byte_range), f"get {key}")

    async def get_partial_values(self, prototype: BufferPrototype,
                                 key_ranges: Iterable[tuple[str, ByteRequest | None]]) -> list[Buffer | None]:
        ranges = list(key_ranges)
        return await retrying_async(lambda: self._store.get_partial_values(prototype, ranges), "get ranges")

    async def _get_many(self, requests: Iterable[tuple[str, BufferPrototype, ByteRequest | None]]
                        ) -> AsyncGenerator[tuple[str, Buffer | None], None]:
        for key, prototype, byte_range in requests:
            yield key, await self.get(key, prototype, byte_range)

    async def exists(self, key: str) -> bool:
        return await retrying_async(lambda: self._store.exists(key), f"exists {key}")

    async def set(self, key: str, value: Buffer) -> None:
        await retrying_async(lambda: self._store.set(key, value), f"set {key}")

    async def delete(self, key: str) -> None:
        await retrying_async(lambda: self._store.delete(key), f"delete {key}")

    async def is_empty(self, prefix: str) -> bool:
        return await retrying_async(lambda: self._store.is_empty(prefix), f"is_empty {prefix}")

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        await retrying_async(lambda: self._store.set_if_not_exists(key, value), f"set {key}")

    async def delete_dir(self, prefix: str) -> None:
        await retrying_async(lambda: self._store.delete_dir(prefix), f"delete {prefix}")

    def list(self) -> AsyncIterator[str]:
        return self._listing(self._store.list, "list")

    def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        return self._listing(lambda: self._store.list_prefix(prefix), f"list {prefix}")

    def list_dir(self, prefix: str) -> AsyncIterator[str]:
        return self._listing(lambda: self._store.list_dir(prefix), f"list {prefix}")

    async def _listing(self, start: Callable[[], AsyncIterator[str]], what: str) -> AsyncIterator[str]:
        async def collect() -> list[str]:
            return [key async for key in start()]

        for key in await retrying_async(collect, what):  # a listing restarts whole on failure
            yield key
