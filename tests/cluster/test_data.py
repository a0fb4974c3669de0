"""The Ray Data view of a stored site, fed to Ray Train as docs/training.md's recipe does."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import actstore
from actstore.store.layout import FLAG_BOS, FLAG_PAD
from tests.coded_store import SITE


def _loop(config: dict) -> None:
    import ray.train

    shard = ray.train.get_dataset_shard("train")
    tokens = [batch["token"].numpy() for batch in shard.iter_torch_batches(batch_size=64)]
    rank = ray.train.get_context().get_world_rank()
    np.save(Path(config["out"]) / f"rank{rank}.npy", np.concatenate(tokens))


def test_ray_train_recipe_at_its_defaults_runs_an_epoch_on_a_two_cpu_cluster(coded_store: Path, tmp_path: Path) -> None:
    # the session cluster has 2 CPUs and the two training workers take 1 each (the default): Ray
    # Train leaves Ray Data no CPU, so reads that reserved one never started (a silent hang)
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from actstore.cluster.data import site_dataset

    trainer = TorchTrainer(
        _loop,
        train_loop_config={"out": str(tmp_path)},
        scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(storage_path=str(tmp_path / "ray-train")),
        datasets={"train": site_dataset(str(coded_store), SITE, seed=0)},
    )
    trainer.fit()
    parts = [np.load(tmp_path / f"rank{r}.npy") for r in range(2)]
    assert parts[0].size == parts[1].size > 0  # Ray Train splits the dataset equally
    together = np.concatenate(parts)
    flags = actstore.open(str(coded_store)).read("tokens/flags", slice(None)).reshape(-1)
    counted = set(np.flatnonzero((flags & (FLAG_BOS | FLAG_PAD)) == 0).tolist())
    assert len(set(together.tolist())) == together.size and set(together.tolist()) <= counted
    assert len(counted) - together.size < 2  # an epoch: every token, but for an odd one out of the equal split
