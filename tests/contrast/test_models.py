"""Model diffing on planted models (tests/planted_models.py): a tiny Gemma 2 A and a copy B whose
block BLOCK writes a known direction on one known token, both extracted over the same stored
tokens (B as the tagged model ``it``, a stage of its own), one SAE on both. The store's corpus
also holds chat records, rendered through a Gemma-like chat template, whose markers are flagged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import actstore
from actstore.cli import main
from actstore.cluster.extract import run_extract
from actstore.cluster.ingest import run_ingest
from actstore.config import ExtractConfig, IngestConfig
from actstore.contrast.models import TEXT_ONLY, contrast_models
from actstore.errors import ConfigError, TokenizerError
from actstore.query.tokens import encode_text
from actstore.store._fs import Location
from actstore.store.codes import read_codes
from actstore.store.layout import FLAG_BOS, FLAG_SPECIAL, NOT_TEXT
from actstore.store.store import Store
from tests.helpers import make_tiny_gemma2, make_tiny_tokenizer, store_hashes, write_jsonl
from tests.planted_models import (
    BLOCK,
    MARKERS,
    PLANTED_LATENT,
    make_chat_tokenizer,
    plant_models,
    records,
)
from tests.store import spec_reader as spec

pytestmark = pytest.mark.usefixtures("ray_cluster")
SITES = [f"blocks.{i}.hook_resid_post" for i in range(4)]
SAE = f"res{BLOCK}"


def _base(root: Path) -> dict:
    return {"store": {"url": str(root / "store")},
            "corpus": {"paths": [str(root / "corpus.jsonl")], "chat_template": True, "metadata_fields": ["topic"]},
            "tokenizer": {"id": str(root / "tok")}, "context": {"ctx_len": 32, "contexts_per_unit": 8, "packing": "document"}}


def _extract_config(root: Path, models: dict[str, Path], sae: Path) -> ExtractConfig:
    tags = [tag for tag in models if tag != "base"]
    return ExtractConfig.model_validate({
        **_base(root), "model": {"id": str(models["base"])},
        "models": {tag: {"id": str(models[tag])} for tag in tags},
        "sites": [{"name": s} for s in SITES] + [{"name": f"{tag}.{s}"} for tag in tags for s in SITES],
        "saes": [{"name": SAE, "site": SITES[BLOCK], "path": str(sae)},
                 {"name": f"it.{SAE}", "site": f"it.{SITES[BLOCK]}", "path": str(sae)}],
        "workers": {"num_workers": 1, "batch_size": 8},
    })


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Ingest (chat records through the template), plant the models on the stored contexts, then
    extract A's sites as stage extract and B's as extract-2 in one run."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("models")
    make_chat_tokenizer(root / "tok")
    write_jsonl(root / "corpus.jsonl", records(24))
    store = run_ingest(IngestConfig.model_validate(_base(root)))
    token = encode_text(store, " the")[0]
    ids = torch.from_numpy(store.tokens(slice(None))["ids"].astype(np.int64))
    paths = plant_models(root, root / "tok", ids, token)
    run_extract(_extract_config(root, {"base": paths["a"], "it": paths["b"]}, paths["sae"]))
    return {"root": root, "paths": paths, "token": token, "url": str(root / "store")}


def test_planted_change_ranks_first_and_sites_move_from_its_block(planted: dict, capsys: pytest.CaptureFixture[str]) -> None:
    store = actstore.open(planted["url"])
    assert {s.name: s.stage for s in store.meta.sites} == {**{s: "extract" for s in SITES}, **{f"it.{s}": "extract-2" for s in SITES}}
    assert store.meta.models["it"]["name"] == str(planted["paths"]["b"]) and store.meta.model["name"] == str(planted["paths"]["a"])
    spec.check_store(Path(planted["url"]))  # an independent reader finds every array of both models, the chat template

    found = store.sae(SAE).contrast_models("base", "it")
    top = found.frame.row(0, named=True)
    assert top["latent"] == PLANTED_LATENT and top["q"] < 0.01 and top["rate_a"] == 0 and top["only_b"] == top["rate_b"] > 0
    assert found.unit == "document" and found.units == store.meta.ingest.n_documents and found.sae_b == f"it.{SAE}"
    sites = {r["site"]: r for r in found.sites.to_dicts()}
    for layer, site in enumerate(SITES):  # bit for bit equal before block BLOCK, moved from it on
        if layer < BLOCK:
            assert sites[site]["rel_l2"] == 0 and sites[site]["cosine"] == pytest.approx(1)
        else:
            assert sites[site]["rel_l2"] > 0.01 and sites[site]["cosine"] < 0.999
    _check_against_dense(store, found)

    # the CLI: --json gives the same frame; without --sae the sites alone; unknown models refused
    assert main(["contrast", planted["url"], "--sae", SAE, "--models", "base,it", "--json", "--top", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["latent"] for r in out["rows"]] == found.frame["latent"].head(3).to_list() and len(out["site_rows"]) == 4
    assert main(["contrast", planted["url"], "--models", "base,it", "--where", "topic = 'chat'"]) == 0
    assert "blocks.3.hook_resid_post" in capsys.readouterr().out
    with pytest.raises(ConfigError, match=r"no model 'rl'.*\['base', 'it'\]"):
        contrast_models(store, SAE, "base", "rl")


def _check_against_dense(store, found) -> None:
    """The streamed statistics equal a plain computation over whole arrays."""
    flags = store.tokens(slice(None))["flags"].reshape(-1)
    doc = store.tokens(slice(None))["doc"].reshape(-1)
    keep = (flags & TEXT_ONLY) == 0
    dense = []
    for name in (SAE, f"it.{SAE}"):
        idx, val = (np.asarray(a).reshape(flags.size, -1)[keep] for a in read_codes(store, name, slice(None)))
        x = np.zeros((int(keep.sum()), found.frame.height))
        rows = np.broadcast_to(np.arange(x.shape[0])[:, None], idx.shape)
        x[rows[idx >= 0], idx[idx >= 0]] = val[idx >= 0]
        dense.append(x)
    change = dense[1] - dense[0]
    frame = found.frame.sort("latent")
    np.testing.assert_allclose(frame["change"].to_numpy(), change.mean(0), atol=1e-9)
    np.testing.assert_allclose(frame["only_b"].to_numpy(), ((dense[1] > 0) & (dense[0] == 0)).mean(0))
    per_doc = np.stack([change[doc[keep] == d].mean(0) for d in np.unique(doc[keep])])
    np.testing.assert_allclose(frame["effect"].to_numpy(), per_doc.mean(0), atol=1e-9)
    site = SITES[3]
    a, b = (store.read(f"activations/{s}", slice(None)).reshape(flags.size, -1)[keep].astype(np.float64)
            for s in (site, f"it.{site}"))
    rel = np.linalg.norm(b - a, axis=1) / np.linalg.norm(a, axis=1)
    assert found.sites.filter(site=site)["rel_l2"].item() == pytest.approx(rel.mean())


def test_chat_markers_are_flagged_specials_and_left_out(planted: dict) -> None:
    store = actstore.open(planted["url"])
    tokens = store.tokens(slice(None))
    docs = store.documents().collect()
    chat = docs.filter(format="chat")["doc"].to_list()
    assert chat and docs.filter(format="text").height + len(chat) == docs.height == 24
    marker_ids = [encode_text(store, m)[0] for m in MARKERS]
    assert sorted(marker_ids) == [i for i in store.meta.tokenizer.special_ids if i in marker_ids]
    in_chat = np.isin(tokens["doc"], chat)
    is_marker = np.isin(tokens["ids"], marker_ids)
    assert (tokens["flags"][in_chat & is_marker] == FLAG_SPECIAL).all() and is_marker[in_chat].sum() >= 4 * len(chat)
    assert not (tokens["flags"][~is_marker] & FLAG_SPECIAL).any()
    # the template writes BOS itself: dropped, so a chat context reads BOS <start_of_turn> user ...
    template = store.meta.tokenizer.chat_template
    assert template is not None and template.dropped_bos
    first = np.flatnonzero(tokens["doc"][:, 1] == chat[0])[0]
    assert tokens["flags"][first, 0] == FLAG_BOS and tokens["ids"][first, 1] == marker_ids[0]
    # statistics and queries leave them out, as they leave out BOS: a latent firing on a marker
    # counts only the context's text tokens
    assert int(store.read(f"stats/saes/{SAE}/tokens", slice(None))[0]) == int(((tokens["flags"] & NOT_TEXT) == 0).sum())
    idx = np.asarray(read_codes(store, SAE, slice(first, first + 1)).idx)[0]
    marker = int(np.flatnonzero(tokens["flags"][first] == FLAG_SPECIAL)[0])
    latent = int(idx[marker][0])
    text = (tokens["flags"][first] & NOT_TEXT) == 0
    span = store.sae(SAE).features_at(ctx=int(first), top=100).filter(latent=latent)
    assert span["tokens_fired"].item() == int(((idx == latent).any(1) & text).sum()) < int((idx == latent).any(1).sum())


def test_a_model_with_another_tokenizer_is_refused_before_any_work(planted: dict, tmp_path: Path) -> None:
    root = planted["root"]
    other_tok = make_tiny_tokenizer(tmp_path / "tok", extra_text="zebra quartz jumbo")
    other = make_tiny_gemma2(tmp_path / "other", other_tok)
    store = actstore.open(planted["url"])
    before = store_hashes(store), sorted(p.relative_to(root) for p in (root / "store").rglob("*"))
    config = _extract_config(root, {"base": planted["paths"]["a"], "it": planted["paths"]["b"], "rl": other},
                             planted["paths"]["sae"])
    with pytest.raises(TokenizerError, match=r"model 'rl' .* does not share the store's tokenizer \((vocabularies|token id)"):
        run_extract(config)
    after = actstore.open(planted["url"])
    assert (store_hashes(after), sorted(p.relative_to(root) for p in (root / "store").rglob("*"))) == before
    assert "rl" not in after.meta.models
    # a new store's first extraction runs its own model: tagged sites alone are refused before any work
    only_it = _extract_config(root, {"base": planted["paths"]["a"], "it": planted["paths"]["b"]}, planted["paths"]["sae"])
    only_it = ExtractConfig.model_validate({**only_it.model_dump(), "store": {"url": str(tmp_path / "new")},
                                            "sites": [{"name": f"it.{s}"} for s in SITES], "saes": []})
    with pytest.raises(ConfigError, match="first extraction runs its own model"):
        run_extract(only_it)
    assert not Store.exists(Location(str(tmp_path / "new")))
    # the original config again: both models' stages are complete, nothing is run or rewritten
    run_extract(_extract_config(root, {"base": planted["paths"]["a"], "it": planted["paths"]["b"]}, planted["paths"]["sae"]))
    assert store_hashes(actstore.open(planted["url"])) == before[0]
