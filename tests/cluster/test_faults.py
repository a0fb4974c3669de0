"""Exactly-once under failure, with real processes: workers killed at each point of a unit, a
driver killed mid-run and resumed. Each final store must equal a clean run's, array by array."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
from transformers import AutoModelForCausalLM

import actstore
from actstore.cluster.extract import run_extract
from actstore.config import ExtractConfig
from actstore.models.capture import capture_sites
from actstore.saes.encode import SAEEncoder, sparse_codes
from actstore.saes.formats import load_sae
from actstore.store.codes import read_codes
from actstore.store.runs import read_run_records
from tests.helpers import (
    make_gemma_scope_sae,
    make_tiny_gemma2,
    sample_records,
    store_hashes,
    write_jsonl,
)

pytestmark = [pytest.mark.usefixtures("ray_cluster"), pytest.mark.slow]
RES = "blocks.1.hook_resid_post"
RES0 = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_tokenizer):
    root = tmp_path_factory.mktemp("faults")
    write_jsonl(root / "corpus.jsonl", sample_records(30, seed=5))
    make_tiny_gemma2(root / "model", tiny_tokenizer)
    make_gemma_scope_sae(root / "sae/params.npz", 64, 48, threshold=0.6)
    start = time.perf_counter()
    clean = run_extract(_config(root, root / "clean"))
    print(f"\n[figure] clean run: {clean.meta.n_units} units, wall {time.perf_counter() - start:.1f} s")
    return root, store_hashes(clean)


def _config(root: Path, url: Path, *, max_tokens: int | None = None, added: bool = False) -> ExtractConfig:
    """The faults config; ``added`` also names a new site with an SAE and a new SAE on the old site."""
    more = {"sites": [{"name": RES0}], "saes": [{"name": "res0", "site": RES0, "path": str(root / "sae"), "code_cap": 16},
                                                {"name": "res1b", "site": RES, "path": str(root / "sae"), "code_cap": 8}]}
    return ExtractConfig.model_validate({
        "store": {"url": str(url)},
        "corpus": {"paths": [str(root / "corpus.jsonl")]},
        "model": {"id": str(root / "model")},
        "context": {"ctx_len": 16, "contexts_per_unit": 4, "max_tokens": max_tokens},
        "sites": [{"name": RES}, *(more["sites"] if added else [])],
        "saes": [{"name": "res1", "site": RES, "path": str(root / "sae"), "code_cap": 16}, *(more["saes"] if added else [])],
        "workers": {"num_workers": 2, "batch_size": 2},
    })


def _committers(store: actstore.Store) -> list[str]:
    return [store.manifests.read("extract", u)["run"] for u in range(store.meta.n_units)]


@pytest.mark.parametrize("point", ["mid_unit", "between_shards", "before_manifest"])
def test_worker_killed_mid_unit(setup, tmp_path, monkeypatch, point) -> None:
    root, clean = setup
    monkeypatch.setenv("ACTSTORE_FAULTS", f"{point}:2:{tmp_path}")
    start = time.perf_counter()
    store = run_extract(_config(root, tmp_path / "s"))
    assert (tmp_path / f"{point}-2").exists(), "the fault did not fire"
    assert store_hashes(store) == clean
    [record] = read_run_records(store.files)
    assert record["status"] == "complete" and record["worker_deaths"] == 1 and record["units_retried"] == 1
    assert record["units_run"] == store.meta.n_units  # every unit took effect once
    assert record["compute_seconds"] > 0 and record["write_seconds"] > 0  # where the workers' time went
    assert set(_committers(store)) == {record["attempt"]}
    assert any("unit 2: worker died" in f for f in record["failures"])
    print(f"\n[figure] worker killed at {point}: units retried {record['units_retried']}, "
          f"hashes equal clean run: yes, wall {time.perf_counter() - start:.1f} s")


def _kill_driver_after(config: ExtractConfig, tmp_path: Path, stage: str, units: int) -> int:
    """Run the extraction in a CLI driver, SIGKILL it once ``units`` units of ``stage`` are
    committed; returns how many were committed when it died."""
    config_path = tmp_path / "config.json"
    config_path.write_text(config.model_dump_json())
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address, "ACTSTORE_UNIT_DELAY_S": "0.5"}
    driver = subprocess.Popen([sys.executable, "-m", "actstore.cli", "extract", str(config_path), "-q"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifests = Path(config.store.url) / "_manifests" / stage
    deadline = time.time() + 180
    while time.time() < deadline and len(list(manifests.glob("*.json"))) < units:
        assert driver.poll() is None, "the driver ended before it could be killed"
        time.sleep(0.1)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    # the dead driver's workers die when Ray notices their owner is gone; one mid-commit may
    # still write its manifest meanwhile, so count once the count has held for 2 s
    done, since = len(list(manifests.glob("*.json"))), time.time()
    while time.time() - since < 2.0:
        time.sleep(0.2)
        now = len(list(manifests.glob("*.json")))
        if now != done:
            done, since = now, time.time()
    return done


def test_driver_killed_then_resumed(setup, tmp_path) -> None:
    root, clean = setup
    killed_done = _kill_driver_after(_config(root, tmp_path / "s"), tmp_path, "extract", 2)
    store = actstore.open(str(tmp_path / "s"))
    assert 0 < killed_done < store.meta.n_units
    info = store.info()  # a live (here: interrupted) store shows its progress
    assert not info.complete and info.units_done == killed_done
    start = time.perf_counter()
    resumed = run_extract(_config(root, tmp_path / "s"))
    assert store_hashes(resumed) == clean
    records = {r["status"]: r for r in read_run_records(resumed.files)}
    assert set(records) == {"running", "complete"}  # the killed run's record stays "running"
    done = records["complete"]
    assert done["units_skipped"] == killed_done and done["units_run"] == resumed.meta.n_units - killed_done
    committers = _committers(resumed)
    assert committers.count(records["running"]["attempt"]) + committers.count(done["attempt"]) == resumed.meta.n_units
    print(f"\n[figure] driver killed after {killed_done} units, resumed: {done['units_run']} units run, "
          f"hashes equal clean run: yes, resume wall {time.perf_counter() - start:.1f} s")


def _file_bytes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


def test_adding_sites_killed_and_resumed(setup, tmp_path) -> None:
    """A new site (with an SAE) and a new SAE on the old site, added to a finished store as stage
    extract-2: the driver is killed mid-stage and the job resubmitted. Every object of the first
    extraction keeps its bytes; the new arrays equal a direct forward over the stored tokens."""
    root, _ = setup
    url = tmp_path / "s"
    shutil.copytree(root / "clean", url)
    before = _file_bytes(url)
    killed_done = _kill_driver_after(_config(root, url, added=True), tmp_path, "extract-2", 1)
    partial = actstore.open(str(url))
    assert 0 < killed_done < partial.meta.n_units and not partial.info().complete
    with pytest.raises(actstore.UnitNotDoneError, match="extract-2"):  # readers check the new site's own stage
        partial.read(f"activations/{RES0}", slice(None))
    time.sleep(1.0)  # let Ray reap the dead driver's actors
    store = run_extract(_config(root, url, added=True))
    after = _file_bytes(url)
    changed = {k for k in before if before[k] != after.get(k)}
    assert changed == {"zarr.json"}  # the root metadata (new sites, SAEs, stage); no array of the first stage
    assert {s.name: s.stage for s in store.meta.sites} == {RES: "extract", RES0: "extract-2"}
    assert {a.name: a.stage for a in store.meta.saes} == {"res1": "extract", "res0": "extract-2", "res1b": "extract-2"}
    info = actstore.open(str(url)).info()
    assert info.complete and info.stages["extract-2"]["units_done"] == store.meta.n_units

    ids = torch.from_numpy(store.tokens(slice(None))["ids"].astype(np.int64))
    model = AutoModelForCausalLM.from_pretrained(str(root / "model"), attn_implementation="eager").eval()
    direct = capture_sites(model, ids, [RES0, RES])
    assert np.array_equal(store.read(f"activations/{RES0}", slice(None)), direct[RES0].numpy())
    encoder = SAEEncoder(load_sae(str(root / "sae")))
    for name, site, cap in (("res0", RES0, 16), ("res1b", RES, 8)):
        ref = sparse_codes(encoder.encode(direct[site].reshape(-1, 64)), cap)
        assert np.array_equal(read_codes(store, name, slice(None), values=False).idx.reshape(-1, cap), ref.idx.numpy())
        assert np.array_equal(store.read(f"codes/{name}/l0", slice(None)).reshape(-1), ref.l0.numpy())
    assert store.array(f"stats/sites/{RES0}/count")[0] == store.array(f"stats/sites/{RES}/count")[0]
    loader = actstore.open(str(url)).loader(RES0, batch_size=32)  # readers see the new stage
    assert next(iter(loader)).shape[-1] == 64

    data = json.loads(_config(root, url, added=True).model_dump_json())
    data["sites"][1]["dtype"] = "bfloat16"  # an existing site with other settings is still refused
    with pytest.raises(actstore.StoreMismatchError, match=rf"sites\.{RES0}\.dtype: store has 'float32', now 'bfloat16'"):
        run_extract(ExtractConfig.model_validate(data))
    print(f"\n[figure] added a site and 2 SAEs as stage extract-2, driver killed after {killed_done} units, resumed: "
          f"first-stage objects unchanged: {len(before) - 1} of {len(before) - 1}")


def test_resume_with_other_settings_is_refused(setup, tmp_path) -> None:
    root, _ = setup
    run_extract(_config(root, tmp_path / "s"))
    data = json.loads(_config(root, tmp_path / "s").model_dump_json())
    data["saes"][0]["code_cap"] = 8
    with pytest.raises(actstore.StoreMismatchError, match=r"saes\.res1\.code_cap: store has 16, now 8"):
        run_extract(ExtractConfig.model_validate(data))
    data = json.loads(_config(root, tmp_path / "s").model_dump_json())
    data["context"]["ctx_len"] = 32
    with pytest.raises(actstore.StoreMismatchError, match=r"context\.ctx_len: store has 16, now 32"):
        run_extract(ExtractConfig.model_validate(data))


def test_flaky_storage_gives_the_same_store(setup, tmp_path, s3_endpoint, s3_bucket) -> None:
    from tests.s3proxy import FlakyProxy

    root, _ = setup
    clean = store_hashes(run_extract(_config(root, tmp_path / "clean", max_tokens=120)))  # a short run: S3 via a proxy is slow
    with FlakyProxy(s3_endpoint) as proxy:
        # botocore's own retries off, so actstore's retry layer is what saves the run
        opts = {"endpoint_url": proxy.endpoint, "config_kwargs": {"retries": {"max_attempts": 1}}}
        data = json.loads(_config(root, root / "unused", max_tokens=120).model_dump_json())
        data["store"] = {"url": f"s3://{s3_bucket}/run", "storage_options": opts}
        start = time.perf_counter()
        store = run_extract(ExtractConfig.model_validate(data))
        wall = time.perf_counter() - start
        assert proxy.failed > 0 and proxy.resets > 0
        assert store_hashes(store) == clean
        [record] = read_run_records(store.files)
        assert record["status"] == "complete" and record["units_run"] == store.meta.n_units
    print(f"\n[figure] flaky storage: {proxy.failed} 500s + {proxy.resets} resets of {proxy.requests} requests, "
          f"worker storage retries {record['storage_retries']}, hashes equal clean run: yes, wall {wall:.1f} s")


def test_workers_follow_the_nodes_that_join_and_leave(setup, tmp_path) -> None:
    """A real multi-node cluster whose head holds one CPU worker. Units are held before their
    manifests: a node added mid-run gets a worker of its own, which takes a unit; the node is
    removed with that unit in flight, and the unit is re-run on the head. The store equals a
    clean run's. (How much sooner the run ends: benchmarks/bench_elastic.py.)"""
    from actstore.cluster.ingest import run_ingest
    from tests.elastic import ElasticDriver

    root, clean = setup
    data = json.loads(_config(root, tmp_path / "s").model_dump_json())
    data["workers"] = {"batch_size": 2}  # no fixed count: as many workers as the cluster holds
    config = ExtractConfig.model_validate(data)
    run_ingest(config.ingest_config())  # tokens on the session cluster: the elastic run only extracts
    gate = tmp_path / "gate"
    gate.touch()
    driver = ElasticDriver(config, tmp_path, {"ACTSTORE_UNIT_GATE": str(gate)})
    try:
        driver.wait_for(lambda: driver.workers_joined() == 1)
        node = driver.add_node()
        driver.wait_for(lambda: driver.workers_joined() == 2)  # the added node's worker took a unit
        driver.remove_node(node)
    finally:
        gate.unlink()
        run = driver.finish()
    store = actstore.open(str(tmp_path / "s"))
    assert store_hashes(store) == clean
    record = run.record
    assert record["status"] == "complete" and record["units_run"] == store.meta.n_units
    assert len({w["node_id"] for w in record["workers"]}) == 2  # one worker on the head, one on the added node
    assert [n for _, n in run.workers_over_time()][:3] == [1, 2, 1]  # joined, then left with its node
    assert record["worker_deaths"] >= 1 and record["units_retried"] >= 1
    assert set(_committers(store)) == {record["attempt"]}
    print(f"\n[figure] elastic: workers over time {run.workers_over_time()}, events {run.events}, "
          f"units retried {record['units_retried']}, wall {run.wall_s:.1f} s")
