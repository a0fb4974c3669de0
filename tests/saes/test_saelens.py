"""SAELens itself on both sides: folders it writes load here and encode like its own
``encode`` (JumpReLU with thresholds of both signs, TopK, standard), and the folders our
trainer writes load in SAELens as 6.x configs (no pre-6.0 conversion), with the hook read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sae_lens import (
    SAE,
    JumpReLUSAE,
    JumpReLUSAEConfig,
    StandardSAE,
    StandardSAEConfig,
    TopKSAE,
    TopKSAEConfig,
)
from sae_lens.loading.pretrained_sae_loaders import handle_config_defaulting
from sae_lens.saes.sae import SAEMetadata

from actstore.saes.encode import SAEEncoder
from actstore.saes.formats import load_sae
from actstore.training.sae import TrainableSAE, save_saelens

HOOK = "blocks.3.hook_resid_post"


def _saelens_sae(architecture: str, d_in: int = 16, d_sae: int = 48):
    meta = SAEMetadata(hook_name=HOOK, model_name="gemma-2-2b", context_size=128)
    cls, cfg = {"jumprelu": (JumpReLUSAE, JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae, metadata=meta)),
                "topk": (TopKSAE, TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=6, metadata=meta)),
                "standard": (StandardSAE, StandardSAEConfig(d_in=d_in, d_sae=d_sae, metadata=meta))}[architecture]
    sae = cls(cfg)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in sae.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
        if architecture == "jumprelu":  # thresholds of both signs: SAEs trained elsewhere have negative ones
            sae.threshold.copy_(torch.linspace(-0.4, 0.4, d_sae))
    return sae


@pytest.mark.parametrize("architecture", ["jumprelu", "topk", "standard"])
def test_saelens6_folder_encodes_like_saelens(tmp_path: Path, architecture: str) -> None:
    sae = _saelens_sae(architecture)
    sae.save_model(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert "hook_name" not in cfg and cfg["metadata"]["hook_name"] == HOOK  # the SAELens 6 layout
    weights = load_sae(str(tmp_path))
    assert weights.hook_name == HOOK and weights.architecture == {"standard": "relu"}.get(architecture, architecture)
    x = torch.randn(300, 16, generator=torch.Generator().manual_seed(1))
    ours = SAEEncoder(weights).encode(x)
    with torch.no_grad():
        theirs = sae.encode(x)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)
    assert ((ours > 0) == (theirs > 0)).float().mean() > 0.999 and (ours >= 0).all()
    if architecture == "jumprelu":
        pre = x @ sae.W_enc.detach() + sae.b_enc.detach()
        assert ((pre > sae.threshold.detach()) & (pre < 0)).sum() > 100  # where relu(pre) * mask and pre * mask differ


def test_pre6_top_level_hook_still_reads(tmp_path: Path) -> None:
    _saelens_sae("jumprelu").save_model(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    meta = cfg.pop("metadata")
    (tmp_path / "cfg.json").write_text(json.dumps({**cfg, "hook_name": meta["hook_name"], "model_name": "gemma-2-2b"}))
    assert load_sae(str(tmp_path)).hook_name == HOOK


@pytest.mark.parametrize("architecture", ["topk", "jumprelu"])
def test_trainer_folder_loads_in_saelens_as_a_6x_config(tmp_path: Path, architecture: str) -> None:
    torch.manual_seed(0)
    trained = TrainableSAE(architecture, 16, 48, k=6, initial_threshold=0.2)
    with torch.no_grad():
        trained.b_enc.normal_(0, 0.2)
    folder = save_saelens(trained, tmp_path / "sae", scale=2.0, hook_name=HOOK, model_name="m", context_size=128,
                          extra={"seed": 0})
    cfg = json.loads((folder / "cfg.json").read_text())
    # SAELens converts a config as pre-6.0 unless metadata.sae_lens_version says >= 6: that
    # conversion keeps the metadata it knows but rebuilds the rest; ours must pass through as is
    assert handle_config_defaulting(dict(cfg)) == cfg
    theirs = SAE.load_from_disk(folder)
    assert theirs.cfg.metadata.hook_name == HOOK and theirs.cfg.metadata.model_name == "m"
    assert theirs.cfg.apply_b_dec_to_input == trained.apply_b_dec_to_input
    x = torch.randn(200, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = trained.encode(x * 2.0)  # the trainer's own forward on scaled inputs
        np.testing.assert_allclose(theirs.encode(x).numpy(), expected.numpy(), atol=1e-5)
    weights = load_sae(str(folder))
    assert weights.hook_name == HOOK
    np.testing.assert_allclose(SAEEncoder(weights).encode(x).numpy(), expected.numpy(), atol=1e-5)
