"""The :class:`Store`: open or create a run's Zarr group, read its metadata, units and arrays."""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal, Self

import numpy as np
import zarr
import zarr.errors
from zarr.core.buffer import default_buffer_prototype

from actstore.errors import StoreExistsError, StoreNotFoundError, UnitNotDoneError
from actstore.store._fs import Backend, Location, SideFiles, probe_endpoint
from actstore.store._storage_errors import not_found, translated
from actstore.store.dtypes import from_storage
from actstore.store.layout import TOKEN_ARRAYS, UnitGrid, token_array
from actstore.store.manifests import ManifestBook
from actstore.store.metadata import ATTRIBUTE, RootMetadata, parse_root_metadata

if TYPE_CHECKING:
    import polars as pl

__all__ = ["TOKENS_STAGE", "Store", "StoreInfo", "Write", "reader_pool", "utc_now"]

logger = logging.getLogger(__name__)

TOKENS_STAGE = "tokens"
EXTRACT_STAGE = "extract"
_STAGE_OF = {"tokens": TOKENS_STAGE}
Mode = Literal["r", "r+"]
READ_THREADS = 8
WRITE_THREADS = 8
Write = tuple[str, slice | int, np.ndarray]  # (array path, rows, values) of a whole-shard write
_READERS: dict[int, ThreadPoolExecutor] = {}  # by process id: a forked DataLoader worker starts its own
_READER_NAME = "actstore-read"


def reader_pool() -> ThreadPoolExecutor:
    """The process's pool for concurrent reads (starting threads for each call cost a feature
    page ~0.1 s). A task in it must not wait on other tasks of it."""
    pool = _READERS.get(os.getpid())
    if pool is None:
        pool = _READERS[os.getpid()] = ThreadPoolExecutor(READ_THREADS, thread_name_prefix=_READER_NAME)
    return pool


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class StoreInfo:
    """A summary of a store, as ``actstore info`` prints it."""

    url: str
    complete: bool
    units_done: int
    units_total: int
    stage: str
    stages: dict[str, dict[str, Any]]
    n_tokens: int
    n_token_slots: int
    n_documents: int
    n_ctx: int
    ctx_len: int
    tokenizer: str
    model: str | None
    models: dict[str, str]  # further models over the same tokens: tag -> name
    sites: list[str]
    saes: list[str]
    bytes: int
    format_version: int
    actstore_version: str
    created: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Store:
    """One run's store: its metadata, units and arrays. Open with :func:`actstore.open` (which
    adds the query and loader calls, :class:`actstore.api.Store`); coordinators create with
    :meth:`create`. This layer imports nothing above it."""

    def __init__(self, location: Location, group: zarr.Group, meta: RootMetadata) -> None:
        self.location = location
        self.group = group
        self.meta = meta
        self.files = SideFiles(location)
        self.manifests = ManifestBook(self.files)
        self._done: dict[str, set[int]] = {}
        self._arrays: dict[str, zarr.Array] = {}

    def __repr__(self) -> str:
        return f"<actstore.Store {self.location.url!r} n_ctx={self.meta.n_ctx} ctx_len={self.meta.ctx_len}>"

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def open(
        cls, url: str, *, storage_options: dict[str, Any] | None = None, mode: Mode = "r", backend: Backend = "fsspec",
        probe: bool = True,
    ) -> Self:
        """Open an existing store (``mode`` "r" or "r+"); ``backend`` picks how zarr reaches s3:// URLs.

        ``probe``: first check that the endpoint takes connections, failing at once when it does
        not (a caller starting work). Workers of a running job pass False: their calls retry
        connection errors, as they would on a server that restarts mid-run.
        """
        location = Location(url, dict(storage_options or {}), backend)
        if probe:
            probe_endpoint(location)
        try:
            with translated(location, writing=False):
                group = zarr.open_group(location.zarr_store(read_only=mode == "r"), mode=mode, zarr_format=3)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError):
            raise not_found(location, f"no actstore store at {url!r}") from None
        if ATTRIBUTE not in group.attrs:
            raise StoreNotFoundError(f"no actstore store at {url!r} (a Zarr group without actstore metadata)")
        meta = parse_root_metadata(dict(group.attrs), url)
        return cls(location, group, meta)

    @classmethod
    def create(cls, location: Location, meta: RootMetadata) -> Self:
        """Create the root group with its metadata (coordinator only).

        Opens with mode "a", never "w": other objects under the root (staging) must survive.
        """
        if cls.exists(location):
            raise StoreExistsError(f"a store already exists at {location.url!r}")
        group = zarr.open_group(location.zarr_store(), mode="a", zarr_format=3)
        group.attrs[ATTRIBUTE] = meta.model_dump(mode="json")
        return cls(location, group, meta)

    @classmethod
    def exists(cls, location: Location) -> bool:
        try:
            group = zarr.open_group(location.zarr_store(read_only=True), mode="r", zarr_format=3)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError):
            return False
        return ATTRIBUTE in group.attrs

    def reopen(self, *, mode: Mode = "r+") -> Self:
        """The same store opened again (fresh metadata), e.g. inside a worker."""
        return type(self).open(self.location.url, storage_options=self.location.storage_options, mode=mode, probe=False,
                               backend=self.location.backend)

    # -- metadata ---------------------------------------------------------------------------
    def update_meta(self, **changes: Any) -> RootMetadata:
        """Replace metadata fields (coordinator only)."""
        self.meta = self.meta.with_changes(**changes)
        self.group.attrs[ATTRIBUTE] = self.meta.model_dump(mode="json")
        return self.meta

    @property
    def grid(self) -> UnitGrid:
        return UnitGrid(self.meta.n_ctx, self.meta.ctx_len, self.meta.contexts_per_unit)

    # -- units -------------------------------------------------------------------------------
    def units_done(self, stage: str = TOKENS_STAGE) -> list[int]:
        return self.manifests.done(stage)

    def require_done(self, stage: str, units: Sequence[int]) -> None:
        """Raise :class:`UnitNotDoneError` unless every unit is committed. Committed units stay
        committed, so the listing is cached and refreshed only when a unit is not in it."""
        done = self._done.get(stage, set())
        if any(u not in done for u in units):
            done = self._done[stage] = set(self.units_done(stage))
        missing = [u for u in units if u not in done]
        if missing:
            raise UnitNotDoneError(
                f"units {missing[:8]} of stage {stage!r} are not committed in {self.location.url!r}"
            )

    # -- arrays ------------------------------------------------------------------------------
    def array(self, path: str) -> zarr.Array:
        """The array at ``path``. Handles are cached: opening one reads its metadata (a request
        on object storage), and arrays are created by the coordinator before workers open the
        store, so an open store's arrays do not change shape under it."""
        node = self._arrays.get(path)
        if node is None:
            found = self.group[path]
            if not isinstance(found, zarr.Array):
                raise KeyError(f"{path!r} is a group, not an array")
            node = self._arrays[path] = found
        return node

    def read(self, path: str, rows: slice | int) -> np.ndarray:
        """Rows of an array along its first axis (contexts, or units for per-unit statistics),
        viewed as its logical dtype. Only committed units can be read: a store being written,
        or one whose run was killed, raises :class:`UnitNotDoneError` for the rest."""
        arr = self.array(path)
        stage = self._stage_of(path)
        if stage is not None:
            start, stop, _ = (slice(rows, rows + 1) if isinstance(rows, int) else rows).indices(arr.shape[0])
            if stop > start:
                per_token = bool(arr.attrs.get("per_token", True))
                first, last = (self.grid.unit_of(start), self.grid.unit_of(stop - 1)) if per_token else (start, stop - 1)
                self.require_done(stage, range(first, last + 1))
        return self._read(arr, rows)

    def read_contexts(self, path: str, contexts: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
        """Rows of a per-token array at scattered contexts (sorted or not), committed units only.

        ``out``: where to decode them, for increasing contexts: an array in the stored dtype with
        at least ``len(contexts)`` rows, whose first rows are filled and returned (viewed as the
        logical dtype). A caller that reads the same amount again and again (the training loader)
        reuses its buffers this way: a fresh 100 MiB array costs its page faults on every read."""
        contexts = np.asarray(contexts, dtype=np.int64)
        stage = self._stage_of(path) or EXTRACT_STAGE
        self.require_done(stage, sorted({self.grid.unit_of(int(c)) for c in contexts}))
        arr = self.array(path)
        wanted, inverse = np.unique(contexts, return_inverse=True)
        in_order = contexts.size == wanted.size and bool((np.diff(contexts) > 0).all())
        if out is None:
            rows = np.empty((wanted.size, *arr.shape[1:]), arr.dtype)
        elif not in_order or out.dtype != arr.dtype or out.shape[1:] != arr.shape[1:] or len(out) < wanted.size:
            raise ValueError(f"out= takes increasing contexts and an array of >= {wanted.size} rows of shape "
                             f"{arr.shape[1:]} in {arr.dtype}; got {out.shape} in {out.dtype}")
        else:
            rows = out[: wanted.size]
        breaks = np.flatnonzero(np.diff(wanted) != 1) + 1
        runs = [(int(r[0]), int(r[-1]) + 1) for r in np.split(wanted, breaks)] if wanted.size else []
        into = default_buffer_prototype().nd_buffer.from_numpy_array
        if len(runs) > 1 and arr.shards is None:  # one call: zarr fetches and decodes each chunk once
            arr.get_orthogonal_selection((wanted,), out=into(rows))
        elif len(runs) > 1:
            # Slices over runs of consecutive contexts, concurrently (on object storage each run is
            # its own requests), each decoded straight into its place in the result (no
            # concatenation copy): zarr's orthogonal selection on a sharded array measured ~15x
            # slower. Called from a pool thread, the runs are read in it (waiting on the pool
            # there could leave no thread free to do the reads).
            at = np.cumsum([0] + [b - a for a, b in runs]).tolist()

            def read(i: int) -> None:
                arr.get_basic_selection(slice(*runs[i]), out=into(rows[at[i] : at[i + 1]]))

            if threading.current_thread().name.startswith(_READER_NAME):
                for i in range(len(runs)):
                    read(i)
            else:
                list(reader_pool().map(read, range(len(runs))))
        elif runs:
            arr.get_basic_selection(slice(*runs[0]), out=into(rows))
        return from_storage(rows if in_order else rows[inverse], str(arr.attrs.get("logical_dtype", arr.dtype)))

    def sae_stage(self, sae: str) -> str:
        """The manifest stage that commits an SAE's codes (extract, or encode-<name>)."""
        return next((s.stage for s in self.meta.saes if s.name == sae), EXTRACT_STAGE)

    def site_stage(self, site: str) -> str:
        """The manifest stage that commits a site's activations (extract, or extract-<n> for a site added later)."""
        return next((s.stage for s in self.meta.sites if s.name == site), EXTRACT_STAGE)

    def _stage_of(self, path: str) -> str | None:
        """Which stage's manifests vouch for the rows of an array (None: not unit-committed)."""
        parts = path.split("/")
        if parts[0] == "codes" or (parts[:2] == ["stats", "saes"] and "units" in parts):
            return self.sae_stage(parts[1 if parts[0] == "codes" else 2])
        if parts[0] == "activations" or (parts[:2] == ["stats", "sites"] and "units" in parts):
            return self.site_stage(parts[1 if parts[0] == "activations" else 2])
        if parts[0] == "stats":
            return None
        return _STAGE_OF.get(parts[0])

    @staticmethod
    def _read(arr: zarr.Array, rows: slice | int) -> np.ndarray:
        return from_storage(np.asarray(arr[rows]), str(arr.attrs.get("logical_dtype", arr.dtype)))

    def write(self, path: str, rows: slice | int, values: np.ndarray) -> None:
        """Write whole shards (a unit's rows). Object-store calls retry transient errors underneath.

        Chunks equal to the fill value are written like any other (zarr's ``write_empty_chunks``):
        skipping them would save nothing on dense activations and codes, and the check is a
        comparison of every value, measured at ~1 s per 65k-token unit of a GPU worker."""
        self.array(path).with_config({"write_empty_chunks": True})[rows] = values

    def write_many(self, writes: Sequence[Write]) -> None:
        """Several whole-shard writes of distinct objects, concurrently (on object storage a
        unit is dozens of small PUTs whose latency would otherwise add up); the first error is raised."""
        with ThreadPoolExecutor(WRITE_THREADS) as pool:
            for done in [pool.submit(self.write, *w) for w in writes]:
                done.result()

    def tokens(self, contexts: slice, *, stage: str = TOKENS_STAGE) -> dict[str, np.ndarray]:
        """Token ids, document index, position and flags of a context range (all units done)."""
        grid = self.grid
        start, stop, _ = contexts.indices(grid.n_ctx)
        if stop > start:
            self.require_done(stage, range(grid.unit_of(start), grid.unit_of(stop - 1) + 1))
        return {name: self._read(self.array(token_array(name)), slice(start, stop)) for name in TOKEN_ARRAYS}

    def documents(self) -> pl.LazyFrame:
        """The documents table as a polars LazyFrame (index, source, row, key, lengths, metadata)."""
        from actstore.store.documents import scan_documents

        return scan_documents(self.files)

    # -- summary -----------------------------------------------------------------------------
    def info(self, *, with_bytes: bool = True) -> StoreInfo:
        meta = self.meta
        stage = EXTRACT_STAGE if EXTRACT_STAGE in meta.stages else TOKENS_STAGE
        stages = {
            name: {"units_done": len(self.units_done(name)), **s.model_dump()}
            for name, s in meta.stages.items()
        }
        return StoreInfo(
            url=self.location.url,
            complete=bool(meta.stages) and all(s.complete for s in meta.stages.values()),
            units_done=stages.get(stage, {}).get("units_done", 0),
            units_total=meta.n_units,
            stage=stage,
            stages=stages,
            n_tokens=meta.ingest.n_tokens,
            n_token_slots=meta.n_ctx * meta.ctx_len,
            n_documents=meta.ingest.n_documents,
            n_ctx=meta.n_ctx,
            ctx_len=meta.ctx_len,
            tokenizer=meta.tokenizer.name_or_path,
            model=None if meta.model is None else str(meta.model.get("name")),
            models={tag: str(m.get("name")) for tag, m in meta.models.items()},
            sites=[s.name for s in meta.sites],
            saes=[s.name for s in meta.saes],
            bytes=self.files.du() if with_bytes else -1,
            format_version=meta.format_version,
            actstore_version=meta.actstore_version,
            created=meta.created,
        )

