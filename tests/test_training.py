"""Training an SAE on the coded store's activations, and encoding stored activations with an SAE."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import actstore
from actstore.cluster.encode import run_encode
from actstore.config import TrainConfig
from actstore.errors import ConfigError, StoreMismatchError
from actstore.loader.normalize import input_scale
from actstore.saes.encode import SAEEncoder
from actstore.saes.formats import load_sae
from actstore.training.trainer import train_sae
from tests.coded_store import SAE, SITE

pytestmark = pytest.mark.usefixtures("ray_cluster")


@pytest.mark.parametrize("architecture", ["topk", "jumprelu"])
def test_trainer_lowers_reconstruction_error(coded_store: Path, tmp_path: Path, architecture: str) -> None:
    config = TrainConfig(store={"url": str(coded_store)}, site=SITE, out=str(tmp_path / architecture), architecture=architecture,
                         d_sae=128, k=8, lr=3e-3, batch_size=64, epochs=12, log_every=10, l0_coefficient=3e-3,
                         initial_threshold=0.05, bandwidth=0.05)
    result = train_sae(config)
    first, last = result.history[0], result.history[-1]
    assert last["explained_variance"] > first["explained_variance"] + 0.1 and last["explained_variance"] > 0.5
    assert (result.path / "metrics.jsonl").exists() and result.tokens == result.history[-1]["tokens"]
    # the saved folder loads back and reads raw activations: the scale is folded in
    store = actstore.open(str(coded_store))
    raw = store.read(f"activations/{SITE}", slice(0, 8)).reshape(-1, 64)
    weights = load_sae(str(result.path))
    assert weights.architecture == architecture and weights.hook_name == SITE
    x = torch.from_numpy(raw)
    enc = SAEEncoder(weights)
    f = enc.encode(x)
    assert f.shape == (x.shape[0], 128)
    residual = (enc.decode(f) - x).pow(2).sum()
    assert float(residual / (x - x.mean(0)).pow(2).sum()) < 0.5  # reconstructs raw activations, in raw units
    if architecture == "topk":
        assert int((f > 0).sum(-1).max()) <= 8


def test_seeded_training_is_bit_reproducible(coded_store: Path, tmp_path: Path) -> None:
    """Same seed: the same weights, byte for byte, and the same metrics (several epochs, so the
    loader's per-epoch order is in it); another seed: other weights."""
    def run(arch: str, seed: int, out: str, overwrite: bool = False) -> tuple[bytes, list]:
        config = TrainConfig(store={"url": str(coded_store)}, site=SITE, out=str(tmp_path / out), architecture=arch, d_sae=64,
                             k=8, batch_size=64, max_tokens=1500, epochs=3, log_every=5, seed=seed, initial_threshold=0.05,
                             overwrite=overwrite)
        result = train_sae(config)
        return (result.path / "sae_weights.safetensors").read_bytes(), [{**h, "seconds": 0} for h in result.history]

    for arch in ("jumprelu", "topk"):
        assert run(arch, 0, f"{arch}a") == run(arch, 0, f"{arch}b")
    assert run("jumprelu", 0, "c")[0] != run("jumprelu", 1, "d")[0]
    saved = (tmp_path / "c" / "sae_weights.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="already holds an SAE"):  # refused before any training
        run("jumprelu", 1, "c")
    assert (tmp_path / "c" / "sae_weights.safetensors").read_bytes() == saved
    assert run("jumprelu", 1, "c", overwrite=True)[0] != saved


def test_normalisation_gives_unit_mean_squared_norm(coded_store: Path) -> None:
    store = actstore.open(str(coded_store))
    scale = input_scale(store, SITE)
    x = torch.cat(list(store.loader(SITE, batch_size=256, shuffle=False, scale=scale)))
    assert abs(float(x.double().pow(2).sum(-1).mean()) - 1.0) < 1e-4


def test_encode_from_store_equals_extraction_codes(coded_store: Path, tmp_path: Path) -> None:
    copy = tmp_path / "store"
    shutil.copytree(coded_store, copy, ignore=shutil.ignore_patterns("index"))
    source = actstore.open(str(copy)).sae(SAE).info.source
    store = run_encode(str(copy), source, name="again", site=SITE, code_cap=20)
    assert store.meta.stages["encode-again"].complete
    for part in ("latent", "value", "l0"):
        assert np.array_equal(store.read(f"codes/again/{part}", slice(None)), store.read(f"codes/{SAE}/{part}", slice(None)))
    for stat in ("fired", "sum", "hist", "tokens"):
        assert np.array_equal(np.asarray(store.array(f"stats/saes/again/{stat}")[...]), np.asarray(store.array(f"stats/saes/{SAE}/{stat}")[...]))
    rerun = run_encode(str(copy), source, name="again", site=SITE, code_cap=20)  # resumable: nothing left to do
    assert rerun.units_done("encode-again") == list(range(store.meta.n_units))
    with pytest.raises(StoreMismatchError):
        run_encode(str(copy), source, name="again", site=SITE, code_cap=5)
    with pytest.raises(ConfigError, match="d_in"):
        from tests.helpers import make_gemma_scope_sae

        run_encode(str(copy), str(make_gemma_scope_sae(tmp_path / "w/params.npz", 32, 16)), name="w", site=SITE)
