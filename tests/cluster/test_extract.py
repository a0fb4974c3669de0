"""Extraction end to end: tiny Gemma 2, Gemma-Scope-format SAEs on two sites, 2 workers, S3."""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

import actstore
from actstore.cluster.encode import run_encode
from actstore.cluster.extract import run_extract
from actstore.config import ExtractConfig
from actstore.models.capture import capture_sites
from actstore.saes.encode import SAEEncoder, sparse_codes
from actstore.saes.formats import load_sae
from actstore.store.codes import read_codes
from actstore.store.layout import FLAG_BOS, FLAG_PAD
from actstore.store.stats import HIST_EDGES, L0_BINS
from tests.helpers import make_gemma_scope_sae, make_tiny_gemma2, sample_records, write_jsonl

pytestmark = pytest.mark.usefixtures("ray_cluster")
RES, RES0, Z = "blocks.1.hook_resid_post", "blocks.0.hook_resid_post", "blocks.2.attn.hook_z"


@pytest.fixture(scope="module")
def assets(tmp_path_factory, tiny_tokenizer) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("extract")
    write_jsonl(root / "corpus.jsonl", sample_records(24, seed=3))
    return {
        "root": root,
        "model": make_tiny_gemma2(root / "model", tiny_tokenizer),
        "sae_res": make_gemma_scope_sae(root / "res/params.npz", 64, 96, threshold=0.6).parent,
        "sae_z": make_gemma_scope_sae(root / "z/params.npz", 128, 80, seed=1, lower_case=True, threshold=0.3),
    }


def _config(assets, url: str, **extra) -> ExtractConfig:
    return ExtractConfig.model_validate({
        "store": {"url": url, **extra.pop("store", {})},
        "corpus": {"paths": [str(assets["root"] / "corpus.jsonl")]},
        "model": {"id": str(assets["model"])},
        "context": {"ctx_len": 16, "contexts_per_unit": 4},
        "sites": [{"name": RES}, {"name": RES0, "dtype": "bfloat16"},
                  {"name": Z, "store_activations": False}],
        "saes": [{"name": "res1", "site": RES, "path": str(assets["sae_res"]), "code_cap": 24, "value_dtype": "float32"},
                 {"name": "res0", "site": RES0, "path": str(assets["sae_res"]), "code_cap": 24},
                 {"name": "z2", "site": Z, "path": str(assets["sae_z"]), "code_cap": 6}],
        "workers": {"num_workers": 2, "batch_size": 3},
        **extra,
    })


def test_extraction_to_s3_equals_direct_computation(assets, s3_endpoint, s3_bucket) -> None:
    opts = {"endpoint_url": s3_endpoint}
    store = run_extract(_config(assets, f"s3://{s3_bucket}/run", store={"storage_options": opts}))
    store = actstore.open(f"s3://{s3_bucket}/run", storage_options=opts)
    assert store.info().complete and store.units_done("extract") == list(range(store.meta.n_units))

    tokens = store.tokens(slice(None))
    ids = torch.from_numpy(tokens["ids"].astype(np.int64))
    model = AutoModelForCausalLM.from_pretrained(str(assets["model"]), attn_implementation="eager").eval()
    direct = capture_sites(model, ids, [RES, "blocks.0.hook_resid_post", Z])

    # activations: bit for bit in the stored dtype
    assert np.array_equal(store.read(f"activations/{RES}", slice(None)), direct[RES].numpy())
    bf16 = store.read("activations/blocks.0.hook_resid_post", slice(None))
    assert bf16.dtype == ml_dtypes.bfloat16
    assert np.array_equal(bf16.view(np.uint16), direct["blocks.0.hook_resid_post"].to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16))
    with pytest.raises(KeyError):  # codes-only site: no activations array
        store.array(f"activations/{Z}")

    counted = ((tokens["flags"] & (FLAG_BOS | FLAG_PAD)) == 0).reshape(-1)
    assert counted.sum() == store.meta.ingest.n_tokens + store.meta.ingest.n_documents  # text + EOS separators
    # codes are the encoder applied to the activation as stored: the bfloat16 site's codes come
    # from its bfloat16 values (the model runs in float32), not from the float32 capture; values
    # exact in float32 (res1), rounded to nearest in bfloat16 (the default: res0, z2)
    for name, site, sae_path, cap in (("res1", RES, assets["sae_res"], 24), ("res0", RES0, assets["sae_res"], 24),
                                      ("z2", Z, assets["sae_z"], 6)):
        x = direct[site].reshape(-1, direct[site].shape[-1]).to(torch.bfloat16 if site == RES0 else torch.float32)
        f = SAEEncoder(load_sae(str(sae_path))).encode(x)
        ref = sparse_codes(f, cap)
        got = read_codes(store, name, slice(None))
        assert np.array_equal(store.read(f"codes/{name}/l0", slice(None)).reshape(-1), ref.l0.numpy())
        assert np.array_equal(got.idx.reshape(-1, cap), ref.idx.numpy())
        dtype = torch.float32 if name == "res1" else torch.bfloat16
        assert got.val.dtype == (np.float32 if name == "res1" else ml_dtypes.bfloat16)
        assert np.array_equal(got.val.reshape(-1, cap).astype(np.float32), ref.val.to(dtype).float().numpy())
        _check_sae_stats(store, name, f.numpy()[counted], ref.l0.numpy()[counted], cap)
    # and any reader can check it: encoding the stored bfloat16 activations gives the stored codes, bit for bit
    again = run_encode(f"s3://{s3_bucket}/run", str(assets["sae_res"]), name="again0", site=RES0, code_cap=24, storage_options=opts)
    assert again.meta.saes[-1].input_dtype == "bfloat16"
    for part in ("latent", "value", "l0"):
        assert np.array_equal(again.read(f"codes/again0/{part}", slice(None)), again.read(f"codes/res0/{part}", slice(None)))
    truncated = (store.read("codes/z2/l0", slice(None)).reshape(-1) > 6)
    assert 0 < truncated.sum() < truncated.size  # the cap bites on some tokens, and it is visible
    assert {s.name: s.input_dtype for s in store.meta.saes} == {"res1": "float32", "res0": "bfloat16", "z2": "float32"}
    x = direct[RES].reshape(-1, 64).double().numpy()[counted]
    assert store.array(f"stats/sites/{RES}/count")[0] == counted.sum()
    np.testing.assert_allclose(store.array(f"stats/sites/{RES}/sum")[:], x.sum(0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(store.array(f"stats/sites/{RES}/sumsq")[0], (x**2).sum(), rtol=1e-6)


def _check_sae_stats(store, name: str, f: np.ndarray, l0: np.ndarray, cap: int) -> None:
    s = lambda part: np.asarray(store.array(f"stats/saes/{name}/{part}")[:])  # noqa: E731
    assert s("tokens")[0] == f.shape[0]
    assert np.array_equal(s("fired"), (f != 0).sum(0))
    np.testing.assert_allclose(s("sum"), f.sum(0, dtype=np.float64), rtol=1e-6, atol=1e-6)
    assert np.array_equal(s("max"), f.max(0))
    rows, cols = np.nonzero(f)
    bins = np.searchsorted(HIST_EDGES, f[rows, cols], side="right")
    hist = np.zeros((f.shape[1], len(HIST_EDGES) + 1), np.int64)
    np.add.at(hist, (cols, bins), 1)
    assert np.array_equal(s("hist"), hist)
    assert np.array_equal(s("l0_hist"), np.bincount(np.minimum(l0, L0_BINS - 1), minlength=L0_BINS))
    assert s("over_cap")[0] == (l0 > cap).sum()


def test_sae_width_mismatch_is_refused_before_any_work(assets, tmp_path) -> None:
    bad = make_gemma_scope_sae(tmp_path / "wrong/params.npz", 128, 32)  # an attention-width SAE on a residual site
    config = _config(assets, str(tmp_path / "s"))
    config = ExtractConfig.model_validate({**config.model_dump(), "saes": [
        {"name": "bad", "site": RES, "path": str(bad)}]})
    with pytest.raises(actstore.ConfigError, match=r"d_in=128 but site 'blocks\.1\.hook_resid_post' of this model is 64 wide"):
        run_extract(config)
    assert not (tmp_path / "s" / "zarr.json").exists()
    data = _config(assets, str(tmp_path / "s")).model_dump()  # 3 CPUs a worker on a 2-CPU cluster, no fixed count
    with pytest.raises(actstore.ActstoreError, match=r"cannot hold one worker of 3 CPU .* set workers\.max_workers"):
        run_extract(ExtractConfig.model_validate({**data, "workers": {"num_cpus": 3}}))
    assert not (tmp_path / "s" / "zarr.json").exists()


def test_unknown_site_and_unknown_layer(assets, tmp_path) -> None:
    data = _config(assets, str(tmp_path / "s")).model_dump()
    with pytest.raises(actstore.ConfigError, match="layers 0..3"):
        run_extract(ExtractConfig.model_validate({**data, "saes": [], "sites": [{"name": "blocks.9.hook_resid_post"}]}))
    with pytest.raises(ValueError, match="not in sites"):
        ExtractConfig.model_validate({**data, "sites": [{"name": RES}]})
