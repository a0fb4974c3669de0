"""Stores of older formats, written here as those versions wrote them: v2 (codes as int32 ids
with -1 past the L0, the index as absolute tokens in rank order, SAEs by path only) and v1 (also
no tokenizer inside). Both are read as they are, refused by writers, and upgraded in place to v3
by `actstore upgrade` with every code and posting unchanged and the SAE copied in
(tests/live/test_portable.py upgrades a v2 store whose SAE lies elsewhere)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

import actstore
from actstore.cli import main
from actstore.cluster.encode import run_encode
from actstore.cluster.index import run_index
from actstore.store.codes import read_codes
from actstore.store.metadata import ATTRIBUTE
from actstore.store.tokenizer import TOKENIZER_KEY, read_tokenizer
from actstore.upgrade import upgrade_store
from tests.coded_store import SAE
from tests.older_formats import as_v2
from tests.store import spec_reader as spec

V2_TOKENIZER_FIELDS = ("file", "sha256", "special_tokens", "clean_up_spaces")


def _as_v2(coded_store: Path, copy: Path) -> Path:
    """A copy of the coded store as format v2 wrote it (tests/older_formats.py)."""
    return as_v2(Path(shutil.copytree(coded_store, copy)))


def _as_v1(coded_store: Path, copy: Path, **tokenizer_changes: object) -> Path:
    """A copy of the coded store as format v1 wrote it: the v2 layout, no tokenizer file, no v2 or v3 fields."""
    _as_v2(coded_store, copy)
    shutil.rmtree(copy / "tokenizer")
    group = zarr.open_group(str(copy), mode="r+")
    raw = dict(group.attrs[ATTRIBUTE])
    tokenizer = {k: v for k, v in raw["tokenizer"].items() if k not in V2_TOKENIZER_FIELDS}
    group.attrs[ATTRIBUTE] = {**raw, "format_version": 1, "tokenizer": {**tokenizer, **tokenizer_changes}}
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


def test_a_v2_store_reads_as_written_is_refused_by_writers_and_upgrades(coded_store: Path, tmp_path: Path) -> None:
    v2 = _as_v2(coded_store, tmp_path / "v2")
    current, old = actstore.open(str(coded_store)), actstore.open(str(v2))
    d_sae, n_ctx = current.meta.saes[0].d_sae, current.meta.n_ctx

    def same_as_current(store: actstore.Store) -> None:
        ours, theirs = read_codes(store, SAE, slice(None)), read_codes(current, SAE, slice(None))
        assert np.array_equal(ours.idx, theirs.idx) and np.array_equal(ours.val, theirs.val)
        for latent in range(d_sae):
            ours_p, theirs_p = store.sae(SAE).postings(latent), current.sae(SAE).postings(latent)
            assert np.array_equal(ours_p[0], theirs_p[0]) and np.array_equal(ours_p[1], theirs_p[1]), latent
        assert store.sae(SAE).features_at(ctx=n_ctx - 1).equals(current.sae(SAE).features_at(ctx=n_ctx - 1))
        assert store.sae(SAE).cofiring(3).equals(current.sae(SAE).cofiring(3))
        path = Path(store.location.url)
        spec.check_store(path)  # the layout its version names, read without actstore
        for latent in (0, d_sae // 2):
            assert all(np.array_equal(a, b) for a, b in zip(spec.postings(path, SAE, latent),
                                                             spec.occurrences_from_codes(path, SAE, latent), strict=True))

    same_as_current(old)
    assert {p.name for p in (v2 / "codes" / SAE).iterdir()} >= {"idx", "val"} and old.sae(SAE).index.block is None
    for write in (lambda: run_index(str(v2), SAE), lambda: run_encode(str(v2), old.meta.saes[0].source, name="b")):
        with pytest.raises(actstore.StoreMismatchError, match=r"format version 2; run `actstore upgrade .*` first"):
            write()
    assert upgrade_store(str(v2)) == (str(v2), 2, 3, (), (SAE,))  # the SAE found where it was, copied in
    new = actstore.open(str(v2))
    assert {p.name for p in (v2 / "codes" / SAE).iterdir()} == {"latent", "value", "l0", "zarr.json"}
    assert new.meta.saes == current.meta.saes and new.sae(SAE).index.block == 4096  # values unchanged: no rounding
    same_as_current(new)
    assert upgrade_store(str(v2)) == (str(v2), 3, 3, (), ())


def test_upgrade_refuses_a_source_that_is_no_longer_the_tokenizer(coded_store: Path, tmp_path: Path) -> None:
    vocab = actstore.open(str(coded_store)).meta.tokenizer.vocab_size
    v1 = _as_v1(coded_store, tmp_path / "v1", vocab_size=vocab + 7)
    with pytest.raises(actstore.StoreMismatchError, match=f"vocab_size: store has {vocab + 7}, the source now {vocab}"):
        upgrade_store(str(v1))
    assert actstore.open(str(v1)).meta.format_version == 1 and not (v1 / TOKENIZER_KEY).exists()
