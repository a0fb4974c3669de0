"""Request economy on object storage: a steady-state unit makes the requests it must, and few more.

Counted at a loopback proxy in front of the S3 API server, so every HTTP request of the worker's
storage layer (zarr's store and the side-file filesystem) is seen.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
import zarr

from actstore.cluster.extract import _prepare_store
from actstore.cluster.ingest import run_ingest
from actstore.config import ExtractConfig
from actstore.extraction.plan import plan_extraction
from actstore.extraction.unit import UnitRunner
from actstore.models.loading import load_model
from actstore.saes.encode import SAEEncoder
from actstore.store.layout import TOKEN_ARRAYS
from actstore.store.store import Store
from tests.helpers import (
    make_gemma_scope_sae,
    make_tiny_gemma2,
    sample_records,
    store_hashes,
    write_jsonl,
)
from tests.s3proxy import FlakyProxy

pytestmark = pytest.mark.usefixtures("ray_cluster")
RES = "blocks.1.hook_resid_post"
UNITS_COMPARED = 3


@pytest.fixture(scope="module")
def assets(tmp_path_factory, tiny_tokenizer) -> Path:
    root = tmp_path_factory.mktemp("requests")
    write_jsonl(root / "corpus.jsonl", sample_records(16, seed=4))
    make_tiny_gemma2(root / "model", tiny_tokenizer)
    make_gemma_scope_sae(root / "sae/params.npz", 64, 48, threshold=0.6)
    return root


def _config(root: Path, url: str, opts: dict) -> ExtractConfig:
    return ExtractConfig.model_validate({
        "store": {"url": url, "storage_options": opts},
        "corpus": {"paths": [str(root / "corpus.jsonl")]},
        "model": {"id": str(root / "model")},
        "context": {"ctx_len": 16, "contexts_per_unit": 2, "max_tokens": 200},
        "sites": [{"name": RES}, {"name": "blocks.0.hook_resid_post", "dtype": "bfloat16"}],
        "saes": [{"name": "res1", "site": RES, "path": str(root / "sae"), "code_cap": 8}],
        "workers": {"num_workers": 1, "batch_size": 2},
    })


def _runner(config: ExtractConfig, backend: str) -> UnitRunner:
    plan, weights = plan_extraction(config, gpu_workers=False)
    store = Store.open(config.store.url, storage_options=dict(config.store.storage_options), mode="r+", backend=backend)
    model = load_model(config.model, dtype=plan.model_dtype, device="cpu")
    return UnitRunner(store, plan, model, {n: SAEEncoder(w) for n, w in weights.items()}, torch.device("cpu"))


def test_fsspec_and_obstore_backends_write_identical_stores(assets, s3_endpoint, s3_bucket) -> None:
    """The same units written through s3fs and through obstore give the same objects, and each
    store reads back the same through either backend."""
    import s3fs

    opts = {"endpoint_url": s3_endpoint}
    base = _config(assets, f"s3://{s3_bucket}/fsspec", opts)
    plan, _ = plan_extraction(base, gpu_workers=False)
    _prepare_store(run_ingest(base.ingest_config()), plan)
    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint, skip_instance_cache=True)
    fs.copy(f"{s3_bucket}/fsspec", f"{s3_bucket}/obstore", recursive=True)
    urls = {b: f"s3://{s3_bucket}/{b}" for b in ("fsspec", "obstore")}
    for backend, url in urls.items():
        runner = _runner(_config(assets, url, opts), backend)
        for unit in range(UNITS_COMPARED):
            runner.run(unit)
    objects = {b: {k.split("/", 2)[2]: fs.cat_file(k) for k in fs.find(f"{s3_bucket}/{b}") if "/_runs/" not in k}
               for b in urls}
    manifests = [k for k in objects["fsspec"] if k.startswith("_manifests/extract/")]
    assert len(manifests) == UNITS_COMPARED
    assert objects["fsspec"] == objects["obstore"]
    hashes = [store_hashes(Store.open(url, storage_options=opts, backend=reader)) for url in urls.values()
              for reader in ("fsspec", "obstore")]
    assert all(h == hashes[0] for h in hashes[1:])


def test_a_steady_state_unit_writes_its_objects_and_a_few_more(assets, s3_endpoint, s3_bucket) -> None:
    """Budget: one PUT per shard the unit owns plus its manifest, one GET per token array it reads,
    and nothing else: no existence probes, no listings, no metadata reads, no HEAD before a GET."""
    with FlakyProxy(s3_endpoint, every=0, reset_every=0) as proxy:
        config = _config(assets, f"s3://{s3_bucket}/run", {"endpoint_url": proxy.endpoint})
        plan, _ = plan_extraction(config, gpu_workers=False)
        _prepare_store(run_ingest(config.ingest_config()), plan)
        setup = len(proxy.log)
        runner = _runner(config, "fsspec")
        store = runner.store
        runner.run(0)  # the first unit opens array handles and lists committed token units
        first = len(proxy.log) - setup
        logs = []
        for unit in (1, 2):
            mark = len(proxy.log)
            runner.run(unit)
            logs.append(proxy.log[mark:])
        owned = _unit_arrays(store)
    prefix = f"/{s3_bucket}/run/"
    for unit, log in zip((1, 2), logs, strict=True):
        methods = Counter(method for method, _ in log)
        puts = sorted(path.removeprefix(prefix) for method, path in log if method == "PUT")
        assert len(set(puts)) == len(puts)  # no object written twice
        assert puts == sorted([f"_manifests/extract/{unit:08d}.json"] + [_shard_key(a, unit, store) for a in owned])
        gets = sorted(path.removeprefix(prefix) for method, path in log if method == "GET")
        assert gets == sorted(f"tokens/{name}/c/{unit}/0" for name in TOKEN_ARRAYS)
        assert set(methods) == {"PUT", "GET"}, methods  # no HEAD, no listing, no DELETE
    print(f"\n[figure] S3 requests: ingest + array creation {setup}, first unit {first}, steady-state unit "
          f"{len(logs[0])} = {len(owned)} shards + 1 manifest + {len(TOKEN_ARRAYS)} token reads")


def _unit_arrays(store: Store) -> list[str]:
    """Arrays an extraction unit writes a shard of: activations, codes, per-unit statistics."""
    return sorted(path for path, node in store.group.members(max_depth=None) if isinstance(node, zarr.Array)
                  and (path.startswith(("activations/", "codes/")) or "/units/" in path))


def _shard_key(path: str, unit: int, store: Store) -> str:
    """The object key of an array's shard ``unit`` (trailing zeros for the other axes)."""
    ndim = store.array(path).ndim
    return f"{path}/c/{unit}" + "/0" * (ndim - 1)
