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
from tests.helpers import make_gemma_scope_sae, make_tiny_gemma2, sample_records, write_jsonl
from tests.s3proxy import FlakyProxy

pytestmark = pytest.mark.usefixtures("ray_cluster")
RES = "blocks.1.hook_resid_post"


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


def test_a_steady_state_unit_writes_its_objects_and_a_few_more(assets, s3_endpoint, s3_bucket) -> None:
    """Budget: one PUT per shard the unit owns plus its manifest, one GET per token array it reads,
    and nothing else: no existence probes, no listings, no metadata reads, no HEAD before a GET."""
    with FlakyProxy(s3_endpoint, every=0, reset_every=0) as proxy:
        config = _config(assets, f"s3://{s3_bucket}/run", {"endpoint_url": proxy.endpoint})
        plan, weights = plan_extraction(config, gpu_workers=False)
        _prepare_store(run_ingest(config.ingest_config()), plan)
        setup = len(proxy.log)
        store = Store.open(config.store.url, storage_options=dict(config.store.storage_options), mode="r+")
        model = load_model(config.model, dtype=plan.model_dtype, device="cpu")
        runner = UnitRunner(store, plan, model, {n: SAEEncoder(w) for n, w in weights.items()}, torch.device("cpu"))
        runner.run(0)  # the first unit opens array handles and lists committed token units
        first = len(proxy.log) - setup
        logs = []
        for unit in (1, 2):
            mark = len(proxy.log)
            runner.run(unit)
            logs.append(proxy.log[mark:])
        owned = sorted(path for path, node in store.group.members(max_depth=None) if isinstance(node, zarr.Array)
                       and path.startswith(("activations/", "codes/", "stats/")) and "/units/" in f"/{path}/".replace(
                           "/codes/", "/units/").replace("/activations/", "/units/"))
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


def _shard_key(path: str, unit: int, store: Store) -> str:
    """The object key of an array's shard ``unit`` (trailing zeros for the other axes)."""
    ndim = store.array(path).ndim
    return f"{path}/c/{unit}" + "/0" * (ndim - 1)
