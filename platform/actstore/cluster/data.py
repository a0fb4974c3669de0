"""A Ray Data view of a stored site, for Ray Train: one read task per chunk of contexts.

Rows are tokens with columns ``x`` (the activation vector, float32) and ``token`` (flat token
index). The dataset is built from chunk descriptors in a seeded order (Ray Data's ``read_zarr``
needs zarr<3 and would not align with shards), and each descriptor is read by one task, so
reads stay shard-aligned. Mix further with ``iter_torch_batches(local_shuffle_buffer_size=...)``.

The read tasks reserve no CPU (``num_cpus=0``), ``readers`` of them at a time. Ray Train takes its
workers' CPUs out of Ray Data's budget, so reads that reserved a CPU would never start when the
training workers hold every CPU (a ``TorchTrainer`` of 2 workers at the default 1 CPU each on a
2-CPU cluster waited forever, silently). A read is mostly I/O and decompression; it shares the
CPUs with the training loop instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import ray

from actstore.store.layout import NOT_TEXT, activation_array, token_array
from actstore.store.store import Store

__all__ = ["site_dataset"]


def site_dataset(url: str, site: str, *, storage_options: dict[str, Any] | None = None, seed: int | None = 0,
                 drop_special: bool = True, readers: int = 2) -> ray.data.Dataset:
    """The committed tokens of ``site`` as a Ray Dataset (chunk order permuted by ``seed``; None keeps
    store order), read by ``readers`` tasks at a time that reserve no CPU."""
    store = Store.open(url, storage_options=storage_options)
    per = int(store.array(activation_array(site)).chunks[0])
    firsts = np.asarray([c for u in store.units_done(store.site_stage(site)) for c in store.grid.contexts(u)[::per]], np.int64)
    if seed is not None:
        firsts = firsts[np.random.default_rng(seed).permutation(firsts.size)]
    drop = NOT_TEXT if drop_special else 0
    location = store.location

    def read(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        s = Store.open(location.url, storage_options=location.storage_options, probe=False)
        xs, ids = [], []
        for first in batch["first"].tolist():
            rows = slice(first, min(first + per, s.meta.n_ctx))
            keep = (s.read(token_array("flags"), rows).reshape(-1) & drop) == 0
            x = s.read(activation_array(site), rows)
            xs.append(x.reshape(-1, x.shape[-1])[keep].astype(np.float32))
            ids.append(first * s.meta.ctx_len + np.flatnonzero(keep))
        return {"x": np.concatenate(xs), "token": np.concatenate(ids)}

    items = [{"first": int(f)} for f in firsts]
    return ray.data.from_items(items, override_num_blocks=max(1, len(items))).map_batches(
        read, batch_size=1, batch_format="numpy", num_cpus=0, compute=ray.data.TaskPoolStrategy(size=readers))
