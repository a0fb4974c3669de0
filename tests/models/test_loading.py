"""Loading only the blocks extraction runs: a truncated base model, straight onto the device."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from actstore.config import HFSource
from actstore.errors import ConfigError
from actstore.models.capture import capture_sites
from actstore.models.loading import load_model, weights_bytes
from tests.helpers import TINY_GEMMA2, make_tiny_gemma2


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_gemma2(tmp_path_factory.mktemp("gemma"))


def test_truncated_load_has_exactly_the_needed_blocks_and_identical_sites(folder: Path) -> None:
    source = HFSource(id=str(folder))
    full = load_model(source, dtype="float32", device="cpu")
    cut = load_model(source, dtype="float32", device="cpu", layers=2)
    assert TINY_GEMMA2["num_hidden_layers"] == 4 and len(cut.layers) == 2 and cut.config.num_hidden_layers == 2
    assert not hasattr(cut, "lm_head") and all(p.device.type == "cpu" for p in cut.parameters())
    block = sum(p.numel() for p in full.model.layers[0].parameters()) * 4
    assert weights_bytes(full) - weights_bytes(cut) == 2 * block  # two blocks fewer (the head is tied)
    ids = torch.randint(3, TINY_GEMMA2["vocab_size"], (2, 12))
    sites = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z", "blocks.1.hook_mlp_out", "blocks.1.hook_resid_post"]
    want = capture_sites(full, ids, sites, truncate=False)
    got = capture_sites(cut, ids, sites)
    for name in sites:
        assert torch.equal(got[name], want[name]), name


def test_keeping_more_blocks_than_the_model_has_is_refused(folder: Path) -> None:
    with pytest.raises(ConfigError, match="has 4 blocks; cannot keep 5"):
        load_model(HFSource(id=str(folder)), dtype="float32", device="cpu", layers=5)


def test_spread_over_devices(folder: Path) -> None:
    from actstore.models.loading import spread_map

    placement = spread_map(5, ["cuda:0", "cuda:1"])
    assert [placement[f"layers.{i}"] for i in range(5)] == ["cuda:0"] * 3 + ["cuda:1"] * 2
    assert placement["embed_tokens"] == "cuda:0" and placement["norm"] == "cuda:1"
    assert [spread_map(4, ["a", "b", "c"])[f"layers.{i}"] for i in range(4)] == ["a", "a", "b", "c"]
    # the code path of a multi-GPU worker, without GPUs: a map over two "devices" that are both the CPU
    source = HFSource(id=str(folder))
    one = load_model(source, dtype="float32", device="cpu", layers=3)
    two = load_model(source, dtype="float32", device="cpu", layers=3, devices=["cpu", "cpu"])
    ids = torch.randint(3, TINY_GEMMA2["vocab_size"], (2, 12))
    assert torch.equal(capture_sites(one, ids, ["blocks.2.hook_resid_post"])["blocks.2.hook_resid_post"],
                       capture_sites(two, ids, ["blocks.2.hook_resid_post"])["blocks.2.hook_resid_post"])
