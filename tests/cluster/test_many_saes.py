"""A whole release in one pass: a tiny Gemma 2 (4 layers) with Gemma-Scope-format SAEs for every
layer and kind (12) from a local mirror of gemma-scope-2b-pt, encoded group by group under a
forced small memory budget; then the store page, search and the cross-layer view over them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from transformers import AutoModelForCausalLM

import actstore
from actstore.cluster.extract import run_extract
from actstore.config import ExtractConfig
from actstore.contrast.stats import bh_qvalues
from actstore.models.capture import capture_sites
from actstore.models.loading import torch_dtype
from actstore.saes.encode import SAEEncoder, encode_reference, sparse_codes
from actstore.saes.formats import load_sae
from actstore.saes.releases import expand_release
from actstore.store.codes import read_codes
from actstore.store.runs import read_run_records
from tests.helpers import make_gemma_scope_sae, make_tiny_gemma2, sample_records, write_jsonl

pytestmark = pytest.mark.usefixtures("ray_cluster")
STORED = {"blocks.1.hook_resid_post": "model", "blocks.2.hook_mlp_out": "bfloat16"}  # the others: codes only
D_SAE, CAP = 40, 8


PLANTED = {"res1-16k": 5, "res2-16k": 11, "mlp1-16k": 7}  # res2's 11 writes 3x res1's 5, mlp1's 7 its opposite


def mirror_release(root: Path) -> None:
    """params.npz files under the release's real folder names (the canonical ones of layers 0-3),
    with the decoder directions of PLANTED."""
    paths = {}
    for i, sae in enumerate(expand_release("gemma-scope-2b-pt", kinds=None, layers=[0, 1, 2, 3], width="16k", l0="canonical")):
        paths[f"{sae.kind}{sae.layer}-16k"] = make_gemma_scope_sae(
            root / sae.repo.split("/")[1] / sae.folder / "params.npz", 128 if sae.kind == "att" else 64, D_SAE, seed=i,
            threshold=0.3)
    direction = np.load(paths["res1-16k"])["W_dec"][PLANTED["res1-16k"]]
    for name, scale in (("res2-16k", 3.0), ("mlp1-16k", -1.0)):
        params = dict(np.load(paths[name]))
        params["W_dec"][PLANTED[name]] = scale * direction
        np.savez(paths[name], **params)


@pytest.fixture(scope="module")
def scope_store(tmp_path_factory, tiny_tokenizer) -> Path:
    root = tmp_path_factory.mktemp("scope")
    write_jsonl(root / "corpus.jsonl", sample_records(8, seed=11))
    make_tiny_gemma2(root / "model", tiny_tokenizer)
    mirror_release(root / "mirror")
    release = {"release": "gemma-scope-2b-pt", "layers": [0, 1, 2, 3], "width": "16k", "root": str(root / "mirror"),
               "code_cap": CAP}
    config = ExtractConfig.model_validate({
        "store": {"url": str(root / "store")}, "corpus": {"paths": [str(root / "corpus.jsonl")]},
        "model": {"id": str(root / "model")}, "context": {"ctx_len": 16, "contexts_per_unit": 4, "max_tokens": 120},
        "sites": [{"name": name, "dtype": dtype} for name, dtype in STORED.items()],
        "saes": [{**release, "kinds": ["res", "mlp"]}, {**release, "kinds": ["att"], "weights_dtype": "bfloat16"}],
        # room for about three of the twelve encoders (~11 kB each): two stay on the device, the others take turns
        "workers": {"num_workers": 1, "batch_size": 4, "sae_memory_gb": 35e3 / 1e9},
    })
    return Path(run_extract(config).location.url)


def test_twelve_saes_in_one_pass_equal_their_reference_encodes(scope_store: Path) -> None:
    store = actstore.open(str(scope_store))
    assert store.info().complete and len(store.meta.saes) == 12
    assert all("/average_l0_" in a.source for a in store.meta.saes)
    [record] = read_run_records(store.files)
    assert record["workers"][0]["sae_groups"] == [2] + [1] * 10  # the forced budget: two stay, ten take turns

    sites = {s.name: s for s in store.meta.sites}
    assert {n for n, s in sites.items() if s.stored} == set(STORED) and len(sites) == 12
    ids = torch.from_numpy(store.tokens(slice(None))["ids"].astype(np.int64))
    model = AutoModelForCausalLM.from_pretrained(str(scope_store.parent / "model"), attn_implementation="eager").eval()
    direct = capture_sites(model, ids, list(sites))
    for sae in store.meta.saes:
        site = sites[sae.site]
        x = direct[site.name].to(torch_dtype(site.dtype))  # the activation as stored (cast to the site's dtype)
        if site.stored:
            stored = torch.from_numpy(np.asarray(store.array(f"activations/{site.name}")[:]))
            assert torch.equal(stored.view(torch.bfloat16) if site.dtype == "bfloat16" else stored, x)
        x = x.reshape(-1, site.d)
        weights = load_sae(sae.source).rounded(sae.weights_dtype)  # att: rounded to bfloat16, as the worker held them
        dense = SAEEncoder(weights).encode(x)
        ref = sparse_codes(dense, CAP)
        got = read_codes(store, sae.name, slice(None))  # values in the SAE's value_dtype (bfloat16 by default), rounded to nearest
        assert np.array_equal(store.read(f"codes/{sae.name}/l0", slice(None)).reshape(-1), ref.l0.numpy()), sae.name
        assert np.array_equal(got.idx.reshape(-1, CAP), ref.idx.numpy()), sae.name
        assert np.array_equal(got.val.reshape(-1, CAP).astype(np.float32),
                              ref.val.to(torch_dtype(sae.value_dtype)).float().numpy()), sae.name
        assert 0 < ref.l0.float().mean() < D_SAE, sae.name  # codes fire, and not everywhere
        # the slow float64 formula agrees (values within rounding; a latent within rounding of its threshold may flip)
        slow = encode_reference(weights, x.float().numpy())
        assert np.abs(dense.numpy() - slow).max() < 1e-4 and ((dense.numpy() != 0) == (slow != 0)).mean() > 0.999
        if sae.weights_dtype == "bfloat16":  # rounding the weights changed the codes: the dtype took effect
            assert not torch.equal(SAEEncoder(load_sae(sae.source)).encode(x), dense)


def test_store_page_and_search_span_every_sae(scope_store: Path, capsys) -> None:
    from starlette.testclient import TestClient

    from actstore.cli import main as cli
    from actstore.web.app import create_app

    store = actstore.open(str(scope_store))
    store.sae("res0-16k").label(3, "the word fox, early", author="ann")
    store.sae("mlp2-16k").label(5, "fox and dog", author="ann")
    store.sae("att3-16k").label(7, "punctuation", author="ann")
    found = store.search("fox", top=10)
    assert sorted(found.select("sae", "latent").rows()) == [("mlp2-16k", 5), ("res0-16k", 3)]
    assert found["rank"].to_list() == [0, 1] and found["match"].is_sorted(descending=True)
    assert found.filter(pl.col("sae") == "mlp2-16k")["density"][0] == store.sae("mlp2-16k").density(5)["density"][0]
    assert cli(["search", str(scope_store), "fox", "--json"]) == 0  # no --sae: every SAE
    assert [(r["sae"], r["latent"]) for r in json.loads(capsys.readouterr().out)] == found.select("sae", "latent").rows()
    by_example = store.search(" the", by_example=True, top=6)
    assert by_example.height == 6 and by_example["evidence"].is_sorted(descending=True)
    assert set(by_example["sae"]) <= {a.name for a in store.meta.saes}
    both = store.contrast("doc % 2 = 0")  # every SAE in one list, q over all their latents
    assert both.frame.height == sum(a.d_sae for a in store.meta.saes) and both.frame["p"].is_sorted()
    one = store.sae("res1-16k").contrast("doc % 2 = 0").frame
    mine = both.frame.filter(pl.col("sae") == "res1-16k").sort("latent")
    assert mine["p"].to_list() == one.sort("latent")["p"].to_list()
    assert np.allclose(both.frame["q"].to_numpy(), bh_qvalues(both.frame["p"].to_numpy()))
    assert f"over all {both.frame.height:,} latents of 12 SAEs" in both.test
    assert cli(["contrast", str(scope_store), "--a", "doc % 2 = 0", "--json", "--top", "5"]) == 0
    assert [r["sae"] for r in json.loads(capsys.readouterr().out)["rows"]] == both.frame["sae"].head(5).to_list()

    client = TestClient(create_app(str(scope_store)))
    layers = client.get("/api/store").json()["by_layer"]
    assert [k for k, _ in layers["kinds"]] == ["attn_z", "mlp_out", "resid_post"]  # in block order
    assert [[c[k][0]["name"] for k, _ in layers["kinds"]] for c in (r["cells"] for r in layers["rows"])] == \
        [[f"att{n}-16k", f"mlp{n}-16k", f"res{n}-16k"] for n in range(4)]
    page = client.get("/").text
    assert page.count('<details class="layer"') == 4 and all(f'href="/sae/{a.name}"' in page for a in store.meta.saes)


def test_a_latent_across_layers(scope_store: Path) -> None:
    from starlette.testclient import TestClient

    from actstore.cluster.index import run_index
    from actstore.store.layout import FLAG_BOS, FLAG_PAD
    from actstore.web.app import create_app

    run_index(str(scope_store), "res1-16k", bucket_nnz=10_000)  # the latent's own occurrences come from its index
    store = actstore.open(str(scope_store))
    latent = PLANTED["res1-16k"]
    frame = store.sae("res1-16k").across_layers(latent, window=1, top=2)
    window = [f"{k}{n}-16k" for n in range(3) for k in ("att", "mlp", "res") if (k, n) != ("res", 1)]  # layers 0-2
    shown = list(dict.fromkeys(frame["sae"]))
    assert shown == [s for s in window if s in shown] and {"mlp0-16k", "res0-16k", "mlp1-16k", "res2-16k"} <= set(shown)
    planted = frame.filter(pl.col("sae") == "res2-16k").row(0, named=True)  # the same direction, 3x: first by cosine
    assert planted["latent"] == PLANTED["res2-16k"] and planted["cosine"] == pytest.approx(1.0, abs=1e-6)
    assert PLANTED["mlp1-16k"] not in frame.filter((pl.col("sae") == "mlp1-16k") & (pl.col("cosine") > 0))["latent"]
    assert frame.filter(pl.col("sae").str.starts_with("att"))["cosine"].is_null().all()  # hook_z is 128 wide, not 64
    # co-firing against the codes themselves: A's counted tokens, B's latent among the codes there, B's count
    flags = store.tokens(slice(None))["flags"].reshape(-1)
    counted = (flags & (FLAG_BOS | FLAG_PAD)) == 0
    mine = np.flatnonzero(counted & (read_codes(store, "res1-16k", slice(None)).idx.reshape(-1, CAP) == latent).any(1))
    for row in frame.iter_rows(named=True):
        theirs = read_codes(store, row["sae"], slice(None)).idx.reshape(-1, CAP)[mine]
        together = int((theirs == row["latent"]).any(1).sum())
        count = int(store.sae(row["sae"]).density(row["latent"])["count"][0])
        assert (row["together"], row["count"]) == (together, count)
        assert row["jaccard"] == pytest.approx(together / (mine.size + count - together))

    client = TestClient(create_app(str(scope_store)))
    view = client.get(f"/api/sae/res1-16k/latent/{latent}/layers", params={"window": 1, "top": 2}).json()
    assert [g["sae"] for g in view["saes"]] == window  # every SAE in the window, those without a latent to show too
    assert all("not 64" in g["missing"] for g in view["saes"] if g["sae"].startswith("att"))
    page = client.get(f"/sae/res1-16k/latent/{latent}/layers", params={"window": 1, "top": 2}).text
    assert f'href="/sae/res2-16k/latent/{PLANTED["res2-16k"]}/layers?window=1&amp;top=2"' in page
    assert client.get(f"/sae/res1-16k/latent/{latent}/layers", params={"window": 1000}).status_code == 400
