"""``actstore plan``: its byte and object estimates against a real run (the coded store)."""

from __future__ import annotations

import json
from pathlib import Path

import actstore
from actstore.cli import main as cli
from tests.coded_store import SAE, coded_config


def _on_disk(url: Path) -> tuple[int, int]:
    files = [f for f in url.rglob("*") if f.is_file() and "_runs" not in f.parts]
    return sum(f.stat().st_size for f in files), len(files)


def _loaded_weights(folder: Path, blocks: int) -> int:
    from actstore.config import HFSource
    from actstore.models.loading import load_model, weights_bytes

    return weights_bytes(load_model(HFSource(id=str(folder)), dtype="float32", device="cpu", layers=blocks))


def test_plan_matches_a_real_run_within_5_percent(coded_store: Path, tmp_path: Path, capsys) -> None:
    store = actstore.open(str(coded_store))
    config = tmp_path / "extract.json"
    config.write_text(coded_config(coded_store.parent).model_dump_json())
    l0 = float(store.read(f"codes/{SAE}/l0", slice(None)).mean())  # the SAE's mean L0 on this corpus: an input
    assert cli(["plan", str(config), "--tokens", str(store.meta.ingest.n_tokens), "--l0", f"{SAE}={l0}",
                "--device", "cpu", "--doc-tokens", str(store.meta.ingest.n_tokens / store.meta.ingest.n_documents), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["n_ctx"] == store.meta.n_ctx and plan["n_units"] == store.meta.n_units
    size, objects = _on_disk(coded_store)
    assert abs(plan["stored_bytes"] - size) / size < 0.05, (plan["stored_bytes"], size)
    assert abs(plan["objects"] - objects) / objects < 0.05, (plan["objects"], objects)
    activations = next(a for a in plan["arrays"] if a["path"].startswith("activations/"))
    real = _on_disk(coded_store / "activations")[0]
    assert abs(activations["stored_bytes"] - real) / real < 0.1  # shuffle-zstd at the ratio measured on SmolLM2
    blocks = plan["blocks_per_worker"]
    assert blocks == 2 and plan["weights_bytes_per_worker"] == _loaded_weights(coded_store.parent / "model", blocks)
    # and the text form names the figures' sources
    assert cli(["plan", str(config), "--tokens", "1000000000"]) == 0
    text = capsys.readouterr().out
    assert "GPU-hours" in text and "scaled by model FLOPs" in text and "weights per worker" in text
    assert "host cores per GPU" in text and "bench_host.py" in text  # from the measured per-core rates (tests/extraction/test_host.py)
