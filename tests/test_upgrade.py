"""Format v1 stores (no tokenizer inside): still read through their recorded source, and
upgraded in place to the current version by `actstore upgrade` (tests/live/test_portable.py
upgrades a v2 store's SAE placement)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import zarr

import actstore
from actstore.cli import main
from actstore.store.metadata import ATTRIBUTE
from actstore.store.tokenizer import TOKENIZER_KEY, read_tokenizer
from actstore.upgrade import upgrade_store
from tests.coded_store import SAE

V2_TOKENIZER_FIELDS = ("file", "sha256", "special_tokens", "clean_up_spaces")
V3_SAE_FIELDS = ("origin", "revision", "file")


def _as_v1(coded_store: Path, copy: Path, **tokenizer_changes: object) -> Path:
    """A copy of the coded store as format v1 wrote it: no tokenizer file, no SAE copy, no v2 or v3 fields."""
    shutil.copytree(coded_store, copy)
    shutil.rmtree(copy / "tokenizer")
    shutil.rmtree(copy / "saes")
    group = zarr.open_group(str(copy), mode="r+")
    raw = dict(group.attrs[ATTRIBUTE])
    tokenizer = {k: v for k, v in raw["tokenizer"].items() if k not in V2_TOKENIZER_FIELDS}
    saes = [{k: v for k, v in sae.items() if k not in V3_SAE_FIELDS} for sae in raw["saes"]]
    group.attrs[ATTRIBUTE] = {**raw, "format_version": 1, "tokenizer": {**tokenizer, **tokenizer_changes}, "saes": saes}
    return copy


def _top(url: Path, latent: int) -> list[list[str]]:
    return actstore.open(str(url)).sae(SAE).top_k(latent, k=5, window=4, per_doc=None)["tokens"].to_list()


def test_a_v1_store_reads_through_its_source_and_upgrades(coded_store: Path, tmp_path: Path, capsys) -> None:
    latent = int(actstore.open(str(coded_store)).sae(SAE).density().sort("count")["latent"][-1])
    expected = _top(coded_store, latent)
    v1 = _as_v1(coded_store, tmp_path / "v1")
    assert actstore.open(str(v1)).meta.format_version == 1
    assert _top(v1, latent) == expected  # the fallback: the recorded source, through transformers

    assert main(["upgrade", str(v1)]) == 0
    assert "upgraded from format v1 to v3" in capsys.readouterr().out
    store = actstore.open(str(v1))
    assert store.meta.format_version == 3 and (v1 / TOKENIZER_KEY).exists()
    assert store.meta.tokenizer == actstore.open(str(coded_store)).meta.tokenizer
    assert store.meta.saes == actstore.open(str(coded_store)).meta.saes  # the SAE found where it was, copied in
    assert (v1 / "saes" / SAE / "params.npz").read_bytes() == (coded_store / "saes" / SAE / "params.npz").read_bytes()
    assert len(read_tokenizer(store.files, store.meta.tokenizer)) == store.meta.tokenizer.vocab_size
    assert _top(v1, latent) == expected
    assert upgrade_store(str(v1)) == (str(v1), 3, 3, (), ())  # nothing left to do


def test_upgrade_refuses_a_source_that_is_no_longer_the_tokenizer(coded_store: Path, tmp_path: Path) -> None:
    vocab = actstore.open(str(coded_store)).meta.tokenizer.vocab_size
    v1 = _as_v1(coded_store, tmp_path / "v1", vocab_size=vocab + 7)
    with pytest.raises(actstore.StoreMismatchError, match=f"vocab_size: store has {vocab + 7}, the source now {vocab}"):
        upgrade_store(str(v1))
    assert actstore.open(str(v1)).meta.format_version == 1 and not (v1 / TOKENIZER_KEY).exists()
