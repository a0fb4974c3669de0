"""``store.loader(site, ...)``: shuffled batches of one site's stored activations.

Order: the committed contexts are cut into chunks (the unit of reading: the activations array's
inner chunks on local disk, whole shards on object storage, where one GET of a shard beats many
ranged GETs); each epoch permutes the chunks with ``(seed, epoch)``; rank ``r`` of ``w``
takes every ``w``-th chunk of that permutation, so ranks are disjoint and together cover every
token once. A rank reads its chunks in groups of ``mix_chunks`` (the mixing buffer), permutes
the tokens of a group with ``(seed, epoch, rank, group)``, and cuts batches from the resulting
stream; by default a group holds about :data:`MIX_BYTES` (:attr:`ActivationLoader.mixing` says
how many places of the store each batch draws from). The order is a pure function of those numbers, so ``state_dict()`` (epoch, group,
offset) resumes exactly mid-epoch. Groups are read ahead on a thread into buffers the loader
keeps for its next groups and epochs (a fresh buffer costs its page faults on every read, and on
Linux a huge-page allocation can stall for longer than the read): memory is about three groups.

Ranks hold different numbers of tokens (chunks differ in BOS and padding, and in count), so by
default each rank stops at the smallest rank's count: equal batch counts, as a DDP loop with a
collective per step needs. Inside a torch ``DataLoader`` the epoch lives in shared memory, so
non-persistent workers (a fresh copy of the loader each epoch) still advance it.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from actstore.errors import ConfigError
from actstore.store.dtypes import storage_dtype
from actstore.store.layout import NOT_TEXT, activation_array, token_array

if TYPE_CHECKING:
    from actstore.store.store import Store

__all__ = ["MIX_BYTES", "ActivationLoader", "Mixing"]

MIX_BYTES = 256 * 2**20  # default mixing buffer (one group); a second one is read ahead


class Mixing(NamedTuple):
    """How well mixed a loader's batches are: each batch's tokens are a random sample of one
    group, i.e. of ``chunks_per_group`` chunks of ``chunk_contexts`` contexts drawn at random
    from the ``n_chunks`` chunks of the store (``group_bytes`` of activations)."""

    chunk_contexts: int
    chunks_per_group: int
    n_chunks: int
    group_bytes: int


class _Group(NamedTuple):
    """A group as read: the buffer holding it, its activations (storage form, one row per token
    slot, a view of the buffer), its kept rows in mixed order and their flat token indices."""

    buffer: np.ndarray
    x: np.ndarray
    rows: np.ndarray
    idx: np.ndarray


class _Pending(NamedTuple):
    """Tokens of a group not yet yielded: its buffer and activations, the rows still to take
    (mixed order), their flat token indices, and the group offset of the first of them."""

    group: int
    buffer: np.ndarray
    x: np.ndarray
    rows: np.ndarray
    idx: np.ndarray
    at: int


class ActivationLoader(torch.utils.data.IterableDataset):  # type: ignore[type-arg]
    """Iterate for one epoch of ``[batch_size, d]`` tensors (the last batch may be short).

    Each ``for`` loop runs the next epoch unless :meth:`set_epoch` or :meth:`load_state_dict`
    says otherwise, also through a ``DataLoader`` whose workers are not persistent. Inside a
    torch ``DataLoader`` (``batch_size=None``) with workers, worker ``i`` of ``n`` takes groups
    ``i, i+n, ...``: still every token once, in another interleaving (exact resume is for
    ``num_workers=0``). ``even_ranks`` (default) trims every rank (and every DataLoader worker
    of it) to the token count of the smallest, so all ranks yield the same number of batches;
    ``even_ranks=False`` keeps every token.
    """

    def __init__(self, store: Store, site: str, *, batch_size: int, shuffle: bool = True, seed: int = 0, rank: int = 0,
                 world_size: int = 1, dtype: torch.dtype = torch.float32, drop_special: bool = True,
                 mix_chunks: int | None = None, chunk_contexts: int | None = None, scale: float = 1.0,
                 with_index: bool = False, even_ranks: bool = True) -> None:
        if site not in {s.name for s in store.meta.sites if s.stored}:
            raise ConfigError(f"the store at {store.location.url!r} holds no activations of {site!r}; it has "
                              f"{[s.name for s in store.meta.sites if s.stored] or 'none'}")
        if batch_size < 1 or (mix_chunks is not None and mix_chunks < 1) or not 0 <= rank < world_size:
            raise ConfigError(f"need batch_size >= 1, mix_chunks >= 1 and 0 <= rank < world_size; got "
                              f"{batch_size}, {mix_chunks}, rank {rank} of {world_size}")
        self.location, self.site = store.location, site
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size, self.dtype = rank, world_size, dtype
        self.drop_flags = NOT_TEXT if drop_special else 0
        self.scale, self.with_index, self.even_ranks = scale, with_index, even_ranks
        self._store: Store | None = store
        # the unit of reading: the array's inner chunk locally; whole shards (units) on object
        # storage, where a ranged GET costs a request's latency (and some servers read the whole
        # object to serve a range)
        array = store.array(activation_array(site))
        default = array.chunks[0] if store.location.is_local else store.meta.contexts_per_unit
        self.chunk_contexts = int(chunk_contexts or default)
        chunk_bytes = self.chunk_contexts * store.meta.ctx_len * int(np.prod(array.shape[2:])) * array.dtype.itemsize
        self.mix_chunks = int(mix_chunks or max(2, MIX_BYTES // max(chunk_bytes, 1)))
        self._chunk_bytes = chunk_bytes
        self.logical = next(s.dtype for s in store.meta.sites if s.name == site)
        self.epoch, self._group, self._offset = 0, 0, 0
        # the epoch as DataLoader workers see it (shared memory survives pickling to workers):
        # -1 = "use self.epoch", else (tag of the DataLoader iteration << 20) | epoch
        self._shared = torch.full((1,), -1, dtype=torch.int64).share_memory_()
        self._worker_pid = 0  # the DataLoader worker process that ran this copy (a persistent one keeps it)
        self._counts: dict[int, int] | None = None  # tokens kept per chunk, by first context
        self._free: deque[np.ndarray] = deque()  # group buffers no batch still reads from

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers reopen the store and make their own buffers
        return {**self.__dict__, "_store": None, "_free": deque()}

    @property
    def store(self) -> Store:
        if self._store is None:
            from actstore.store.store import Store

            self._store = Store.open(self.location.url, storage_options=self.location.storage_options,
                                     backend=self.location.backend, probe=False)  # reopened in DataLoader workers, mid-run
        return self._store

    @property
    def mixing(self) -> Mixing:
        """How many places of the store each batch draws from (see :class:`Mixing`); a group
        holds at most this rank's share of the chunks."""
        n_chunks = sum(len(self.store.grid.contexts(u)[:: self.chunk_contexts]) for u in self.store.units_done(self.store.site_stage(self.site)))
        per_group = min(self.mix_chunks, len(range(self.rank, n_chunks, self.world_size)))
        return Mixing(self.chunk_contexts, per_group, n_chunks, per_group * self._chunk_bytes)

    # -- position ---------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        self.epoch, self._group, self._offset = epoch, 0, 0
        self._shared[0] = -1

    def state_dict(self) -> dict[str, int]:
        """Where the next batch starts: load it into a loader with the same settings to resume."""
        return {"epoch": self.epoch, "group": self._group, "offset": self._offset, "seed": self.seed,
                "rank": self.rank, "world_size": self.world_size, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        for key in ("seed", "rank", "world_size", "batch_size"):
            if state[key] != getattr(self, key):
                raise ConfigError(f"the state was saved with {key}={state[key]}, this loader has {getattr(self, key)}")
        self.epoch, self._group, self._offset = state["epoch"], state["group"], state["offset"]
        self._shared[0] = -1

    # -- order ------------------------------------------------------------------------------
    def groups(self, epoch: int, *, rank: int | None = None) -> list[np.ndarray]:
        """A rank's chunk groups (arrays of first-context indices) in epoch ``epoch`` (this rank's by default)."""
        store, per = self.store, self.chunk_contexts
        contexts = [c for u in store.units_done(store.site_stage(self.site)) for c in store.grid.contexts(u)[::per]]
        chunks = np.asarray(contexts, dtype=np.int64)
        if self.shuffle:
            chunks = chunks[np.random.default_rng([self.seed, epoch]).permutation(chunks.size)]
        mine = chunks[(self.rank if rank is None else rank) :: self.world_size]
        return [mine[i : i + self.mix_chunks] for i in range(0, mine.size, self.mix_chunks)]

    def _chunk_counts(self) -> dict[int, int]:
        """Tokens kept (not dropped as special) per chunk; read once from the flags (one byte a token)."""
        if self._counts is None:
            store, per = self.store, self.chunk_contexts
            firsts = [c for u in store.units_done(store.site_stage(self.site)) for c in store.grid.contexts(u)[::per]]
            ctx = np.concatenate([np.arange(f, min(f + per, store.meta.n_ctx)) for f in firsts]) if firsts else np.empty(0, np.int64)
            kept = ((store.read_contexts(token_array("flags"), ctx) & self.drop_flags) == 0).sum(axis=1)
            starts = np.searchsorted(ctx, np.asarray(firsts, np.int64))
            self._counts = dict(zip(firsts, np.add.reduceat(kept, starts).tolist() if firsts else [], strict=True))
        return self._counts

    def _budget(self, epoch: int, start_group: int, offset: int, worker: Any) -> int | None:
        """Tokens this rank (worker) may yield from ``(start_group, offset)`` on: the smallest
        share of any rank, so that all ranks stop after the same number of batches."""
        if not self.even_ranks or self.world_size == 1:
            return None
        counts = self._chunk_counts()
        shares = []
        for rank in range(self.world_size):
            groups = self.groups(epoch, rank=rank)[start_group:]
            if worker is not None:
                groups = groups[worker.id :: worker.num_workers]
            shares.append(sum(counts[int(c)] for g in groups for c in g))
        return max(0, min(shares) - offset)

    def _epoch_in_worker(self, worker: Any) -> int:
        """The epoch a DataLoader worker runs. A non-persistent worker gets a fresh copy of the
        loader each epoch, so its ``epoch`` would never advance; the shared counter does. The
        workers of one DataLoader iteration share a base seed (``seed - id``), new with each
        iteration: the first worker to see a new one advances the epoch, the others read it.
        Workers may race, but they write the same value."""
        if self._worker_pid == os.getpid():  # a persistent worker's copy keeps its own epoch, advanced at each end
            return self.epoch
        self._worker_pid = os.getpid()
        tag = (((worker.seed - worker.id) >> 20) & ((1 << 42) - 1)) | 1
        seen = int(self._shared[0])
        if seen >= 0 and seen >> 20 == tag:
            return seen & 0xFFFFF
        epoch = self.epoch if seen < 0 else (seen & 0xFFFFF) + 1
        self._shared[0] = (tag << 20) | epoch
        return epoch

    def _read_group(self, epoch: int, g: int, chunks: np.ndarray) -> _Group:
        """A group, read into a free buffer. The rows are gathered batch by batch as they are
        taken, so that copy overlaps the reading of the next group instead of following it."""
        store, per, ctx_len = self.store, self.chunk_contexts, self.store.meta.ctx_len
        ctx = np.concatenate([np.arange(f, min(f + per, store.meta.n_ctx)) for f in np.sort(chunks).tolist()])
        keep = (store.read_contexts(token_array("flags"), ctx).reshape(-1) & self.drop_flags) == 0
        if self._free:
            buffer = self._free.pop()
        else:
            array = store.array(activation_array(self.site))
            buffer = np.empty((self.mix_chunks * per, *array.shape[1:]), array.dtype)
        x = store.read_contexts(activation_array(self.site), ctx, out=buffer).view(storage_dtype(self.logical))
        rows = np.flatnonzero(keep)
        if self.shuffle:
            rows = rows[np.random.default_rng([self.seed, epoch, self.rank, g]).permutation(rows.size)]
        idx = (ctx[:, None] * ctx_len + np.arange(ctx_len)).reshape(-1)[rows]
        return _Group(buffer, x.reshape(-1, x.shape[-1]), rows, idx)

    # -- iteration --------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        worker = torch.utils.data.get_worker_info()
        epoch, start_group, offset = self.epoch, self._group, self._offset
        if worker is not None and (epoch := self._epoch_in_worker(worker)) != self.epoch:
            start_group, offset = 0, 0
        groups = self.groups(epoch)
        mine = list(range(start_group, len(groups)))
        if worker is not None:
            mine = mine[worker.id :: worker.num_workers]
        budget = self._budget(epoch, start_group, offset, worker)
        logical = self.logical
        pending: deque[_Pending] = deque()
        have = 0
        for g, (buffer, x, rows, idx) in zip(mine, self._prefetch(epoch, groups, mine), strict=True):
            skip = offset if g == start_group else 0
            n = rows.size - skip if budget is None else min(rows.size - skip, budget)
            pending.append(_Pending(g, buffer, x, rows[skip : skip + n], idx[skip : skip + n], skip))
            have += n
            if budget is not None:
                budget -= n
            while have >= self.batch_size:
                have -= self.batch_size
                yield self._take(pending, self.batch_size, g, logical)
            if budget == 0:
                break
        if have:
            yield self._take(pending, have, mine[-1], logical)
        self.epoch, self._group, self._offset = epoch + 1, 0, 0

    def _take(self, pending: deque[_Pending], n: int, last: int, logical: str) -> Any:
        """The next ``n`` tokens as a batch (gathered from their groups); the position moves to just after them."""
        xs, ids = [], []
        while n:
            p = pending[0]
            k = min(n, p.rows.size)
            xs.append(p.x[p.rows[:k]])  # a gather: the batch owns its memory, not the buffer
            ids.append(p.idx[:k])
            if k == p.rows.size:
                self._free.append(pending.popleft().buffer)
            else:
                pending[0] = p._replace(rows=p.rows[k:], idx=p.idx[k:], at=p.at + k)
            n -= k
        self._group, self._offset = (pending[0].group, pending[0].at) if pending else (last + 1, 0)
        one = len(xs) == 1  # most batches lie inside one group: no concatenation copy
        return self._batch(xs[0] if one else np.concatenate(xs), ids[0] if one else np.concatenate(ids), logical)

    def _prefetch(self, epoch: int, groups: list[np.ndarray], mine: list[int]) -> Iterator[_Group]:
        """Groups in order, the next one read on a thread while the current one is consumed."""
        out: queue.Queue[Any] = queue.Queue(maxsize=1)
        stop = threading.Event()

        def work() -> None:
            try:
                for g in mine:
                    if stop.is_set():
                        return
                    out.put(self._read_group(epoch, g, groups[g]))
            except BaseException as exc:  # surfaced in the consumer
                out.put(exc)

        threading.Thread(target=work, daemon=True).start()
        try:
            for _ in mine:
                item = out.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:  # the consumer stopped early: let the reader finish its put and end
            stop.set()
            if not out.empty():  # a full queue holds the reader in put; an empty one takes its put at once
                out.get_nowait()  # (no exception handling: this may run at exit, after modules are torn down)

    def _batch(self, x: np.ndarray, idx: np.ndarray, logical: str) -> Any:
        t = torch.from_numpy(np.ascontiguousarray(x))
        if logical == "bfloat16":
            t = t.view(torch.bfloat16)
        t = t.to(self.dtype)
        if self.scale != 1.0:
            t = t * self.scale
        return (t, torch.from_numpy(idx)) if self.with_index else t
