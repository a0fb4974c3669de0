"""Gemma Scope releases in the config: expansion to SAELens' real folders, refusals, and
``actstore plan`` on a whole release with no Hub access (the shipped shapes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from actstore.cli import main as cli
from actstore.config import ExtractConfig
from actstore.saes.releases import expand_release, release_table

# SAELens' canonical folders of gemma-scope-2b-pt-{att,mlp,res} at width 16k, layers 0-3
# (pretrained_saes.yaml, the -canonical releases): the planted truth the expansion must give
CANONICAL_2B_16K = {("att", 0): 104, ("mlp", 0): 119, ("res", 0): 105, ("att", 1): 79, ("mlp", 1): 105,
                    ("res", 1): 102, ("att", 2): 93, ("mlp", 2): 95, ("res", 2): 141, ("att", 3): 117,
                    ("mlp", 3): 95, ("res", 3): 59}
SITE = {"att": "blocks.{}.attn.hook_z", "mlp": "blocks.{}.hook_mlp_out", "res": "blocks.{}.hook_resid_post"}
BASE = {"store": {"url": "/tmp/unused"}, "corpus": {"paths": ["unused.jsonl"]}, "model": {"id": "google/gemma-2-2b"}}


def hand_written(root: str | None, *, stored: str) -> dict:
    """The 12 SAEs of layers 0-3 written out one by one, with the site ``stored`` listed first
    (activations kept) and the other sites codes-only, in the order the expansion adds them."""
    def path(kind: str, layer: int) -> str:
        folder = f"gemma-scope-2b-pt-{kind}/layer_{layer}/width_16k/average_l0_{CANONICAL_2B_16K[kind, layer]}"
        return f"{root}/{folder}" if root else f"google/{folder}"

    order = [(kind, layer) for layer in range(4) for kind in ("att", "mlp", "res")]
    return {**BASE,
            "sites": [{"name": stored}] + [{"name": SITE[k].format(layer), "store_activations": False}
                                           for k, layer in order if SITE[k].format(layer) != stored],
            "saes": [{"name": f"{k}{layer}-16k", "site": SITE[k].format(layer), "path": path(k, layer)} for k, layer in order]}


@pytest.mark.parametrize("root", [None, "/mirror"])
def test_a_release_entry_expands_to_the_hand_written_config(root: str | None) -> None:
    release = {"release": "gemma-scope-2b-pt", "kinds": ["res", "mlp", "att"], "layers": [0, 1, 2, 3], "width": "16k",
               "l0": "canonical", **({"root": root} if root else {})}
    stored = "blocks.1.hook_resid_post"
    expanded = ExtractConfig.model_validate({**BASE, "sites": [{"name": stored}], "saes": [release]})
    assert expanded == ExtractConfig.model_validate(hand_written(root, stored=stored))
    # a chosen L0 names its folder; the whole release at 16k is 26 layers x 3 kinds
    [one] = ExtractConfig.model_validate({**BASE, "saes": [{**release, "kinds": ["res"], "layers": [12], "l0": 82, "root": None}]}).saes
    assert one.path == "google/gemma-scope-2b-pt-res/layer_12/width_16k/average_l0_82" and one.name == "res12-16k"
    everything = expand_release("gemma-scope-2b-pt", kinds=None, layers="all", width="16k", l0="canonical")
    assert len(everything) == 78 and {s.layer for s in everything} == set(range(26))
    assert release_table()["source"]["commit"] == "91ca16ccd0684e4dd6323cd4f23ded734339ec54"


@pytest.mark.parametrize("entry,message", [
    ({"kinds": ["mlp"], "width": "262k"}, r"gemma-scope-2b-pt-mlp has no width '262k'; it has \['16k', '65k'\]"),
    ({"kinds": ["res"], "width": "131k", "layers": [12]}, "names no canonical SAE for .*layer_12/width_131k; choose l0 from"),
    ({"kinds": ["res"], "width": "16k", "l0": 50}, r"has no average_l0_50; it has average_l0_N for N in \[13, 25, 46, 105, 226\]"),
    ({"kinds": ["att"], "width": "16k", "layers": [26]}, "has no layer 26 at width 16k; it has layers 0-25"),
    ({"release": "gemma-scope-9b-it", "kinds": ["mlp"], "width": "16k"}, r"has no 'mlp' SAEs; it has \['res'\]"),
    ({"release": "gemma-scope-2b-it", "width": "16k"}, "unknown release 'gemma-scope-2b-it'"),
])
def test_what_the_table_lacks_is_refused(entry: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ExtractConfig.model_validate({**BASE, "saes": [{"release": "gemma-scope-2b-pt", **entry}]})


def test_plan_of_the_2b_release_needs_no_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # any Hub call would fail
    config = tmp_path / "scope.json"
    config.write_text(json.dumps({**BASE, "model": {"id": "google/gemma-2-2b", "dtype": "bfloat16"},
                                  "saes": [{"release": "gemma-scope-2b-pt", "width": "16k"}], "index": {"build": True}}))
    assert cli(["plan", str(config), "--tokens", "1000000000", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert len(plan["saes"]) == 78 and plan["blocks_per_worker"] == 26
    assert {s["d_in"] for s in plan["saes"] if ".attn.hook_z" in s["site"]} == {2048}  # n_heads * head_dim = 8 * 256
    assert {s["d_in"] for s in plan["saes"] if ".attn.hook_z" not in s["site"]} == {2304}
    assert all("average_l0_" in s["source"] for s in plan["saes"]) and not any("activations/" in a["path"] for a in plan["arrays"])
    assert len(plan["worker"]["sae_groups"]) == 1 and plan["gpu_hours"] > 30  # the encoders outweigh the model's FLOPs
    # on a 24 GB card the 11 GB of encoders do not fit beside the model and a batch: groups, said in the text
    assert cli(["plan", str(config), "--tokens", "1000000000", "--device-memory-gb", "24"]) == 0
    text = capsys.readouterr().out
    assert "encoding in turns" in text and "take turns" in text and "codes/<sae>/latent (x78)" in text and "res25-16k" in text
    # a model whose shapes do not ship still needs its config: Gemma 2 9B's ship too
    config.write_text(json.dumps({**BASE, "model": {"id": "google/gemma-2-9b-it"},
                                  "saes": [{"release": "gemma-scope-9b-it", "width": "131k"}]}))
    assert cli(["plan", str(config), "--tokens", "1000", "--json"]) == 0
    assert [s["d_in"] for s in json.loads(capsys.readouterr().out)["saes"]] == [3584] * 3
