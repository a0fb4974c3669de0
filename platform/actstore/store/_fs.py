"""Storage access: one place that turns a store URL into an fsspec filesystem and a Zarr store.

Zarr arrays go through zarr's own stores (LocalStore for local paths, FsspecStore otherwise);
the small side objects (unit manifests, documents tables, staging) go through the synchronous
fsspec filesystem of the same location. Credentials stay in the storage options given at open
time (or the environment's standard chain) and never reach metadata or log lines.
"""

from __future__ import annotations

import json
import posixpath
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import fsspec
import zarr.storage
from fsspec.core import url_to_fs
from zarr.abc.store import Store as StoreLike

from actstore.store._obstore import obstore_zarr_store
from actstore.store._retry import RetryingStore, retrying
from actstore.store._storage_errors import endpoint_of, is_unreachable, storage_error, translated

__all__ = ["Backend", "Location", "probe_endpoint", "redact_storage_options"]

Backend = Literal["fsspec", "obstore"]

_SAFE_OPTION_KEYS = frozenset(
    {"endpoint_url", "anon", "use_ssl", "region_name", "client_kwargs", "config_kwargs",
     "requester_pays", "auto_mkdir", "default_block_size"}
)
REDACTED = "<redacted>"


def redact_storage_options(options: dict[str, Any]) -> dict[str, Any]:
    """Return storage options with every value not known to be harmless replaced by a marker."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key not in _SAFE_OPTION_KEYS:
            out[key] = REDACTED
        elif isinstance(value, dict):
            out[key] = redact_storage_options(value)
        else:
            out[key] = value
    return out


def _is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


@dataclass(frozen=True)
class Location:
    """A storage location (the store root) with its options; picklable, so it travels to Ray tasks."""

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict)
    backend: Backend = "fsspec"  # how zarr reaches s3:// (side files always go through fsspec)

    def __repr__(self) -> str:  # never print credentials
        return f"Location({self.url!r})"

    @property
    def is_local(self) -> bool:
        return _is_local(self.url)

    @property
    def local_path(self) -> str:
        return self.url.removeprefix("file://")

    def fs(self) -> tuple[fsspec.AbstractFileSystem, str]:
        """A fresh synchronous filesystem and the root path inside it."""
        if self.is_local:
            return fsspec.filesystem("file", auto_mkdir=True), posixpath.abspath(self.local_path)
        opts = {"skip_instance_cache": True, **self.storage_options}
        fs, path = url_to_fs(self.url, **opts)
        return fs, path.rstrip("/")

    def zarr_store(self, *, read_only: bool = False) -> StoreLike:
        """The Zarr store at this location."""
        if self.is_local:
            return zarr.storage.LocalStore(self.local_path, read_only=read_only)
        if self.backend == "obstore":
            return RetryingStore(obstore_zarr_store(self.url, self.storage_options, read_only=read_only))
        options = dict(self.storage_options)
        if self.url.startswith(("s3://", "s3a://")):
            # s3fs precedes every whole-object GET with a HEAD (to split large objects into
            # concurrent ranges) unless max_concurrency is 1. Zarr's whole-object reads are inner
            # chunks of a few MiB, so that split never pays, and the HEAD doubled a unit's reads.
            options.setdefault("max_concurrency", 1)
        return RetryingStore(zarr.storage.FsspecStore.from_url(self.url, storage_options=options, read_only=read_only))

    def child(self, *parts: str) -> Location:
        """The location of a path below this one."""
        return Location(posixpath.join(self.url.rstrip("/"), *parts), self.storage_options, self.backend)


class SideFiles:
    """Small objects next to the Zarr hierarchy (manifests, tables), addressed by relative key."""

    def __init__(self, location: Location) -> None:
        self.location = location
        self.fs, self.root = location.fs()

    def path(self, key: str) -> str:
        return posixpath.join(self.root, key)

    def exists(self, key: str) -> bool:
        """Whether the object exists. On S3 one HEAD of the key: ``fs.exists`` follows a miss
        with a listing (to look for a "directory"), doubling the requests of every check."""
        path = self.path(key)
        if not hasattr(self.fs, "call_s3"):
            return bool(retrying(lambda: self.fs.exists(path), f"exists {key}"))
        bucket, name, _ = self.fs.split_path(path)

        def head() -> bool:
            try:
                self.fs.call_s3("head_object", Bucket=bucket, Key=name)
            except FileNotFoundError:
                return False
            return True

        return bool(retrying(head, f"exists {key}"))

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write a whole object: a single PUT on object stores, temp-and-rename locally."""
        path = self.path(key)
        if self.location.is_local:
            self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
            tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"  # unique: a retried unit may rewrite the same key
            self.fs.pipe_file(tmp, data)
            self.fs.mv(tmp, path)
        else:
            retrying(lambda: self.fs.pipe_file(path, data), f"write {key}")

    def read_bytes(self, key: str) -> bytes:
        return bytes(retrying(lambda: self.fs.cat_file(self.path(key)), f"read {key}"))

    def read_range(self, key: str, start: int, end: int) -> bytes:
        return bytes(retrying(lambda: self.fs.cat_file(self.path(key), start=start, end=end), f"read {key}"))

    def write_json(self, key: str, obj: Any) -> None:
        self.write_bytes(key, json.dumps(obj, indent=1, sort_keys=True).encode())

    def read_json(self, key: str) -> Any:
        return json.loads(self.read_bytes(key))

    def list(self, prefix: str) -> list[str]:
        """Names directly below ``prefix`` (empty when it does not exist)."""
        path = self.path(prefix)
        self.fs.invalidate_cache(path)
        try:
            entries = retrying(lambda: self.fs.ls(path, detail=False), f"list {prefix}")
        except FileNotFoundError:
            return []
        return sorted(posixpath.basename(str(e).rstrip("/")) for e in entries)

    def remove(self, prefix: str) -> None:
        path = self.path(prefix)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    def du(self) -> int:
        """Total bytes below the root."""
        try:
            return int(self.fs.du(self.root, total=True))
        except FileNotFoundError:
            return 0


PROBE_TIMEOUT_S = 4.0  # the start-up probe's connect (and read) timeout
_reached: set[str] = set()  # endpoints that answered a probe in this process


def probe_endpoint(location: Location, *, writing: bool = False) -> None:
    """Fail at once, in actstore's words, when no server takes a connection at the location's
    S3 endpoint: one HEAD of the bucket, no retries, a short timeout. Any answer (even a refusal
    or a missing bucket, which the caller's own calls then report) counts as reached.

    For start-up, before any work: the storage calls of a running job retry connection errors
    for about a minute (a restarting server is back by then), which made a dead endpoint take
    over a minute to be reported. Each endpoint is probed once per process.
    """
    if location.is_local or not location.url.startswith(("s3://", "s3a://")):
        return
    endpoint = endpoint_of(location)
    if endpoint in _reached:
        return
    config = {**(location.storage_options.get("config_kwargs") or {}), "retries": {"total_max_attempts": 1},
              "connect_timeout": PROBE_TIMEOUT_S, "read_timeout": PROBE_TIMEOUT_S}
    fs, root = url_to_fs(location.url, **{**location.storage_options, "skip_instance_cache": True, "config_kwargs": config})
    fs.retries = 1  # s3fs's own retry loop
    try:
        fs.call_s3("head_bucket", Bucket=root.split("/", 1)[0])
    except Exception as exc:
        if is_unreachable(exc):
            raise storage_error(exc, location, writing=writing) from None
    _reached.add(endpoint)


def check_access(location: Location, *, write: bool) -> None:
    """Fail fast with a clear message when the location cannot be reached, listed (or written)."""
    probe_endpoint(location, writing=write)
    with translated(location, writing=write):
        fs, root = location.fs()
        if location.is_local:
            if write:
                fs.makedirs(root, exist_ok=True)
            return
        bucket = root.split("/", 1)[0]
        fs.ls(bucket, detail=False)
        if write:
            probe = posixpath.join(root, "_actstore_write_probe")
            fs.pipe_file(probe, b"ok")
            fs.rm(probe)
