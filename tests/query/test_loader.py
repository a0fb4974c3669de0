"""The training loader over the coded store's stored activations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import actstore
from actstore.store.layout import FLAG_BOS, FLAG_PAD
from tests.coded_store import SITE


@pytest.fixture(scope="module")
def store(coded_store: Path):
    return actstore.open(str(coded_store))


def _counted(store) -> np.ndarray:
    flags = store.read("tokens/flags", slice(None)).reshape(-1)
    return np.flatnonzero((flags & (FLAG_BOS | FLAG_PAD)) == 0)


def _epoch(loader) -> tuple[list[torch.Tensor], np.ndarray]:
    batches = list(loader)
    return [b[0] for b in batches], np.concatenate([b[1].numpy() for b in batches])


def test_shuffle_covers_every_token_once_and_mixes(store) -> None:
    loader = store.loader(SITE, batch_size=50, seed=1, mix_chunks=4, with_index=True)
    xs, order = _epoch(loader)
    assert sorted(order.tolist()) == _counted(store).tolist()  # every counted token exactly once
    acts = store.read(f"activations/{SITE}", slice(None)).reshape(-1, 64)
    assert torch.equal(torch.cat(xs), torch.from_numpy(acts[order]))  # each row is its token's vector
    units = {int(t) // (16 * store.meta.contexts_per_unit) for t in order[:50]}
    assert len(units) >= 3  # the first batch already draws from several units
    xs, again = _epoch(loader)  # the next epoch: another order, read into the first epoch's buffers
    assert not np.array_equal(order, again)
    assert torch.equal(torch.cat(xs), torch.from_numpy(acts[again]))  # no batch shares a reused buffer
    _, same = _epoch(store.loader(SITE, batch_size=50, seed=1, mix_chunks=4, with_index=True))
    assert np.array_equal(order, same)  # same seed, same order
    _, plain = _epoch(store.loader(SITE, batch_size=50, shuffle=False, with_index=True))
    assert plain.tolist() == _counted(store).tolist()


def test_default_reads_and_mixing(store, s3_endpoint, s3_bucket) -> None:
    local = store.loader(SITE, batch_size=50)  # local: inner chunks, a group of about MIX_BYTES (here the whole store)
    inner = store.array(f"activations/{SITE}").chunks[0]
    assert local.mixing.chunk_contexts == inner and local.mixing.chunks_per_group == local.mixing.n_chunks
    one = local.mixing.group_bytes // local.mixing.chunks_per_group  # a group is its chunks, no more
    assert one == inner * store.meta.ctx_len * store.array(f"activations/{SITE}").shape[-1] * 4
    half = store.loader(SITE, batch_size=50, rank=1, world_size=2).mixing
    assert half.chunks_per_group == local.mixing.n_chunks // 2 and half.group_bytes == half.chunks_per_group * one
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint, skip_instance_cache=True)
    fs.put(str(store.location.url), f"{s3_bucket}/store", recursive=True)
    remote = actstore.open(f"s3://{s3_bucket}/store", storage_options={"endpoint_url": s3_endpoint})
    loader = remote.loader(SITE, batch_size=50, seed=1, with_index=True)  # object storage: whole shards
    assert loader.mixing.chunk_contexts == remote.meta.contexts_per_unit
    assert loader.mixing.n_chunks == remote.meta.n_units
    order = np.concatenate([idx.numpy() for _, idx in loader])
    assert sorted(order.tolist()) == _counted(store).tolist()


def test_resume_mid_epoch_is_exact(store) -> None:
    full = store.loader(SITE, batch_size=37, seed=3, mix_chunks=2, with_index=True)
    _, expected = _epoch(full)
    first = store.loader(SITE, batch_size=37, seed=3, mix_chunks=2, with_index=True)
    seen = []
    for i, (_, idx) in enumerate(first):
        seen.append(idx.numpy())
        if i == 6:
            state = first.state_dict()
            break
    resumed = store.loader(SITE, batch_size=37, seed=3, mix_chunks=2, with_index=True)
    resumed.load_state_dict(state)
    rest = [idx.numpy() for _, idx in resumed]
    assert np.array_equal(np.concatenate(seen + rest), expected)


def test_ranks_are_disjoint_and_cover(store) -> None:
    parts = [_epoch(store.loader(SITE, batch_size=20, seed=0, rank=r, world_size=3, with_index=True, even_ranks=False))[1]
             for r in range(3)]
    together = np.concatenate(parts)
    assert len(set(together.tolist())) == together.size and sorted(together.tolist()) == _counted(store).tolist()
    assert len({p.size for p in parts}) > 1  # uneven: the case even_ranks is for


def test_ranks_yield_equal_batch_counts_by_default(store) -> None:
    # a DDP loop with a collective per step: each rank must take the same number of steps
    for world, batch in ((2, 20), (3, 7)):
        loaders = [store.loader(SITE, batch_size=batch, seed=4, rank=r, world_size=world, with_index=True) for r in range(world)]
        parts = [[idx.numpy() for _, idx in loader] for loader in loaders]
        assert len({len(p) for p in parts}) == 1 and len({sum(b.size for b in p) for p in parts}) == 1
        together = np.concatenate([b for p in parts for b in p])
        assert len(set(together.tolist())) == together.size  # still disjoint
        assert _counted(store).size - together.size < world * 16 * 4  # at most a chunk per rank dropped
    # the same through DataLoader workers inside each rank
    counts = []
    for r in range(2):
        dl = torch.utils.data.DataLoader(store.loader(SITE, batch_size=20, seed=4, rank=r, world_size=2), batch_size=None,
                                         num_workers=2, multiprocessing_context="fork")
        counts.append(sum(1 for _ in dl))
    assert counts[0] == counts[1]


def test_dtype_round_trip_and_special_tokens(store) -> None:
    stored = store.read(f"activations/{SITE}", slice(None)).reshape(-1, 64)
    x, idx = next(iter(store.loader(SITE, batch_size=64, dtype=torch.bfloat16, with_index=True)))
    assert x.dtype == torch.bfloat16 and torch.equal(x, torch.from_numpy(stored[idx.numpy()]).to(torch.bfloat16))
    every = _epoch(store.loader(SITE, batch_size=500, drop_special=False, with_index=True))[1]
    assert every.size == store.meta.n_ctx * store.meta.ctx_len


def test_inside_a_dataloader_with_workers(store) -> None:
    loader = store.loader(SITE, batch_size=40, seed=2, with_index=True)
    dl = torch.utils.data.DataLoader(loader, batch_size=None, num_workers=2, multiprocessing_context="spawn")
    order = np.concatenate([idx.numpy() for _, idx in dl])
    assert sorted(order.tolist()) == _counted(store).tolist()
    # default (non-persistent) workers get a fresh copy each epoch: the epoch still advances
    again = np.concatenate([idx.numpy() for _, idx in dl])
    assert sorted(again.tolist()) == _counted(store).tolist() and not np.array_equal(order, again)
    loader.set_epoch(0)  # an explicit epoch wins: epoch 0's order again, the same as before
    assert np.array_equal(np.concatenate([idx.numpy() for _, idx in dl]), order)


def test_ray_data_adapter_reads_every_token_once(store, ray_cluster) -> None:
    from actstore.cluster.data import site_dataset

    ds = site_dataset(store.location.url, SITE, seed=0)
    rows = ds.take_all()
    tokens = sorted(int(r["token"]) for r in rows)
    assert tokens == _counted(store).tolist()
    acts = store.read(f"activations/{SITE}", slice(None)).reshape(-1, 64)
    r = rows[0]
    assert np.array_equal(r["x"], acts[int(r["token"])])
