"""``store.loader(site, ...)``: shuffled batches of one site's stored activations.

Order: the committed contexts are cut into chunks (the activations array's inner chunks, its
unit of reading); each epoch permutes the chunks with ``(seed, epoch)``; rank ``r`` of ``w``
takes every ``w``-th chunk of that permutation, so ranks are disjoint and together cover every
token once. A rank reads its chunks in groups of ``mix_chunks`` (the mixing buffer), permutes
the tokens of a group with ``(seed, epoch, rank, group)``, and cuts batches from the resulting
stream. The order is a pure function of those numbers, so ``state_dict()`` (epoch, group,
offset) resumes exactly mid-epoch. One group is read ahead on a thread: memory is two groups.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from actstore.errors import ConfigError
from actstore.store.dtypes import storage_dtype
from actstore.store.layout import FLAG_BOS, FLAG_PAD, activation_array, token_array
from actstore.store.store import EXTRACT_STAGE

if TYPE_CHECKING:
    from actstore.store.store import Store

__all__ = ["ActivationLoader"]


class ActivationLoader(torch.utils.data.IterableDataset):  # type: ignore[type-arg]
    """Iterate for one epoch of ``[batch_size, d]`` tensors (the last batch may be short).

    Each ``for`` loop runs the next epoch unless :meth:`set_epoch` or :meth:`load_state_dict`
    says otherwise. Inside a torch ``DataLoader`` (``batch_size=None``) with workers, worker
    ``i`` of ``n`` takes groups ``i, i+n, ...``: still every token once, in another interleaving
    (exact resume is for ``num_workers=0``).
    """

    def __init__(self, store: Store, site: str, *, batch_size: int, shuffle: bool = True, seed: int = 0, rank: int = 0,
                 world_size: int = 1, dtype: torch.dtype = torch.float32, drop_special: bool = True,
                 mix_chunks: int = 8, chunk_contexts: int | None = None, scale: float = 1.0,
                 with_index: bool = False) -> None:
        if site not in {s.name for s in store.meta.sites if s.stored}:
            raise ConfigError(f"the store at {store.location.url!r} holds no activations of {site!r}; it has "
                              f"{[s.name for s in store.meta.sites if s.stored] or 'none'}")
        if batch_size < 1 or mix_chunks < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"need batch_size >= 1, mix_chunks >= 1 and 0 <= rank < world_size; got "
                              f"{batch_size}, {mix_chunks}, rank {rank} of {world_size}")
        self.location, self.site = store.location, site
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size, self.dtype = rank, world_size, dtype
        self.drop_flags = (FLAG_BOS | FLAG_PAD) if drop_special else 0
        self.mix_chunks, self.scale, self.with_index = mix_chunks, scale, with_index
        self._store: Store | None = store
        # the unit of reading: the array's inner chunk by default; whole shards (units) suit object
        # stores that serve ranges of large objects slowly
        self.chunk_contexts = int(chunk_contexts or store.array(activation_array(site)).chunks[0])
        self.logical = next(s.dtype for s in store.meta.sites if s.name == site)
        self.epoch, self._group, self._offset = 0, 0, 0

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers reopen the store themselves
        return {**self.__dict__, "_store": None}

    @property
    def store(self) -> Store:
        if self._store is None:
            from actstore.store.store import Store

            self._store = Store.open(self.location.url, storage_options=self.location.storage_options,
                                     backend=self.location.backend)
        return self._store

    # -- position ---------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        self.epoch, self._group, self._offset = epoch, 0, 0

    def state_dict(self) -> dict[str, int]:
        """Where the next batch starts: load it into a loader with the same settings to resume."""
        return {"epoch": self.epoch, "group": self._group, "offset": self._offset, "seed": self.seed,
                "rank": self.rank, "world_size": self.world_size, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        for key in ("seed", "rank", "world_size", "batch_size"):
            if state[key] != getattr(self, key):
                raise ConfigError(f"the state was saved with {key}={state[key]}, this loader has {getattr(self, key)}")
        self.epoch, self._group, self._offset = state["epoch"], state["group"], state["offset"]

    # -- order ------------------------------------------------------------------------------
    def groups(self, epoch: int) -> list[np.ndarray]:
        """This rank's chunk groups (arrays of first-context indices) in epoch ``epoch``."""
        store, per = self.store, self.chunk_contexts
        contexts = [c for u in store.units_done(EXTRACT_STAGE) for c in store.grid.contexts(u)[::per]]
        chunks = np.asarray(contexts, dtype=np.int64)
        if self.shuffle:
            chunks = chunks[np.random.default_rng([self.seed, epoch]).permutation(chunks.size)]
        mine = chunks[self.rank :: self.world_size]
        return [mine[i : i + self.mix_chunks] for i in range(0, mine.size, self.mix_chunks)]

    def _read_group(self, epoch: int, g: int, chunks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tokens (flat index, activations in storage form) of a group, mixed."""
        store, per, ctx_len = self.store, self.chunk_contexts, self.store.meta.ctx_len
        ctx = np.concatenate([np.arange(f, min(f + per, store.meta.n_ctx)) for f in np.sort(chunks).tolist()])
        keep = (store.read_contexts(token_array("flags"), ctx).reshape(-1) & self.drop_flags) == 0
        x = store.read_contexts(activation_array(self.site), ctx).view(storage_dtype(self.logical))
        rows = np.flatnonzero(keep)
        if self.shuffle:
            rows = rows[np.random.default_rng([self.seed, epoch, self.rank, g]).permutation(rows.size)]
        idx = (ctx[:, None] * ctx_len + np.arange(ctx_len)).reshape(-1)[rows]
        return x.reshape(-1, x.shape[-1])[rows], idx  # one copy: selection and mixing together

    # -- iteration --------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        epoch, start_group, offset = self.epoch, self._group, self._offset
        groups = self.groups(epoch)
        mine = list(range(start_group, len(groups)))
        worker = torch.utils.data.get_worker_info()
        if worker is not None:
            mine = mine[worker.id :: worker.num_workers]
        logical = self.logical
        pending: deque[tuple[int, np.ndarray, np.ndarray, int]] = deque()  # (group, x, idx, offset of x[0])
        have = 0
        for g, (x, idx) in zip(mine, self._prefetch(epoch, groups, mine), strict=True):
            skip = offset if g == start_group else 0
            pending.append((g, x[skip:], idx[skip:], skip))
            have += x.shape[0] - skip
            while have >= self.batch_size:
                have -= self.batch_size
                yield self._take(pending, self.batch_size, g, logical)
        if have:
            yield self._take(pending, have, mine[-1], logical)
        self.epoch, self._group, self._offset = epoch + 1, 0, 0

    def _take(self, pending: deque[tuple[int, np.ndarray, np.ndarray, int]], n: int, last: int, logical: str) -> Any:
        """The next ``n`` tokens as a batch; the position moves to just after them."""
        xs, ids = [], []
        while n:
            g, x, idx, at = pending[0]
            k = min(n, x.shape[0])
            xs.append(x[:k])
            ids.append(idx[:k])
            if k == x.shape[0]:
                pending.popleft()
            else:
                pending[0] = (g, x[k:], idx[k:], at + k)
            n -= k
        self._group, self._offset = (pending[0][0], pending[0][3]) if pending else (last + 1, 0)
        one = len(xs) == 1  # most batches lie inside one group: no concatenation copy
        return self._batch(xs[0] if one else np.concatenate(xs), ids[0] if one else np.concatenate(ids), logical)

    def _prefetch(self, epoch: int, groups: list[np.ndarray], mine: list[int]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Groups in order, the next one read on a thread while the current one is consumed."""
        out: queue.Queue[Any] = queue.Queue(maxsize=1)

        def work() -> None:
            try:
                for g in mine:
                    out.put(self._read_group(epoch, g, groups[g]))
            except BaseException as exc:  # surfaced in the consumer
                out.put(exc)

        threading.Thread(target=work, daemon=True).start()
        for _ in mine:
            item = out.get()
            if isinstance(item, BaseException):
                raise item
            yield item

    def _batch(self, x: np.ndarray, idx: np.ndarray, logical: str) -> Any:
        t = torch.from_numpy(np.ascontiguousarray(x))
        if logical == "bfloat16":
            t = t.view(torch.bfloat16)
        t = t.to(self.dtype)
        if self.scale != 1.0:
            t = t * self.scale
        return (t, torch.from_numpy(idx)) if self.with_index else t
