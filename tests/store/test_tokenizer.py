"""The tokenizer inside the store: it decodes and encodes as the ingesting transformers tokenizer
did, and a store copied away from its tokenizer's source still answers queries."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import zarr

import actstore
from actstore.config import HFSource
from actstore.corpus.tokenize import load_tokenizer, tokenizer_info, tokenizer_json
from actstore.errors import TokenizerError
from actstore.store.metadata import ATTRIBUTE
from actstore.store.tokenizer import (
    TOKENIZER_KEY,
    StoredTokenizer,
    read_tokenizer,
    tokenizer_difference,
    tokenizer_sha256,
)
from tests.coded_store import SAE
from tests.helpers import SAMPLE_TEXT, make_tiny_tokenizer

TEXTS = [SAMPLE_TEXT[:200], "  leading spaces, punctuation !? and don't", "x", "unseen ünïcödé 漢字 text"]


def _wordpiece_with_clean_up(folder: Path) -> Path:
    """A WordPiece tokenizer that removes spaces before punctuation when decoding (BERT-like)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(cleanup=False)  # the clean-up happens in transformers, as in some models
    tok.train_from_iterator([SAMPLE_TEXT], trainers.WordPieceTrainer(vocab_size=200, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"]))
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="[CLS]", eos_token="[SEP]", pad_token="[PAD]", unk_token="[UNK]",
                            clean_up_tokenization_spaces=True).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("kind", ["bpe", "wordpiece"])
def test_stored_tokenizer_encodes_and_decodes_as_transformers(tiny_tokenizer: Path, tmp_path: Path, kind: str) -> None:
    folder = tiny_tokenizer if kind == "bpe" else _wordpiece_with_clean_up(tmp_path / "wp")
    source = HFSource(id=str(folder))
    hf = load_tokenizer(source)
    info = tokenizer_info(hf, source)
    assert info.clean_up_spaces == (kind == "wordpiece")
    assert info.sha256 == tokenizer_sha256(tokenizer_json(hf)) and info.special_tokens["bos_token"] == hf.bos_token
    stored = StoredTokenizer.from_json(tokenizer_json(hf), clean_up_spaces=info.clean_up_spaces)
    assert len(stored) == len(hf)
    for text in TEXTS:
        ids = hf.encode(text, add_special_tokens=False)
        assert stored.encode(text) == ids
        with_bos = [info.bos_token_id, *ids]
        assert stored.decode(with_bos) == hf.decode(with_bos)
        prefixes = [with_bos[: i + 1] for i in range(len(with_bos))]
        assert stored.batch_decode(prefixes) == hf.batch_decode(prefixes)


def _copy_without_source(coded_store: Path, tmp_path: Path) -> Path:
    """The coded store copied, its recorded tokenizer source pointing at a folder that is gone."""
    copy = tmp_path / "copy"
    shutil.copytree(coded_store, copy, ignore=shutil.ignore_patterns("index"))
    shutil.copytree(coded_store / "index", copy / "index")
    gone = tmp_path / "model-elsewhere"
    shutil.copytree(actstore.open(str(coded_store)).meta.tokenizer.source["id"], gone)
    group = zarr.open_group(str(copy), mode="r+")
    raw = dict(group.attrs[ATTRIBUTE])
    group.attrs[ATTRIBUTE] = {**raw, "tokenizer": {**raw["tokenizer"], "source": {"id": str(gone)}}}
    shutil.rmtree(gone)
    return copy


def test_a_copied_store_without_the_source_answers_top(coded_store: Path, tmp_path: Path) -> None:
    store = actstore.open(str(coded_store))
    info = store.meta.tokenizer
    assert store.meta.format_version == 3 and info.file == TOKENIZER_KEY
    assert tokenizer_sha256((coded_store / TOKENIZER_KEY).read_text()) == info.sha256
    latent = int(store.sae(SAE).density().sort("count")["latent"][-1])
    expected = store.sae(SAE).top_k(latent, k=5, window=4, per_doc=None).to_dicts()
    assert any(len(row["tokens"]) > 1 for row in expected)
    copy = _copy_without_source(coded_store, tmp_path)
    # a fresh interpreter where transformers cannot be imported and the Hub is off
    code = ("import sys; sys.modules['transformers'] = None; from actstore.cli import main; "
            f"sys.exit(main(['top', {str(copy)!r}, '--sae', {SAE!r}, '--latent', '{latent}', '--k', '5', '--window', '4', "
            "'--per-doc', '0', '--json']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert [(r["ctx"], r["pos"], r["tokens"]) for r in got] == [(r["ctx"], r["pos"], r["tokens"]) for r in expected]


def test_a_damaged_tokenizer_file_is_refused(coded_store: Path, tmp_path: Path) -> None:
    copy = _copy_without_source(coded_store, tmp_path)
    (copy / TOKENIZER_KEY).write_text((copy / TOKENIZER_KEY).read_text().replace('"', "'", 1))
    store = actstore.open(str(copy))
    with pytest.raises(TokenizerError, match="does not match the SHA-256"):
        read_tokenizer(store.files, store.meta.tokenizer)
    (copy / TOKENIZER_KEY).unlink()
    with pytest.raises(TokenizerError, match="lacks its tokenizer file"):
        read_tokenizer(store.files, store.meta.tokenizer)


def test_tokenizers_differ_in_what_ids_mean_not_in_names(tiny_tokenizer: Path, tmp_path: Path) -> None:
    """Model diffing compares tokenizer.json contents: a copy under another name is the same; another
    vocabulary or another special token is not, and the difference is named."""
    ours = tokenizer_json(load_tokenizer(HFSource(id=str(tiny_tokenizer))))
    copy = tmp_path / "copy"
    shutil.copytree(tiny_tokenizer, copy)
    assert tokenizer_difference(ours, tokenizer_json(load_tokenizer(HFSource(id=str(copy))))) is None
    other = make_tiny_tokenizer(tmp_path / "other", extra_text="zebra quartz")
    assert "vocabularies of" in str(tokenizer_difference(ours, tokenizer_json(load_tokenizer(HFSource(id=str(other))))))
    marked = load_tokenizer(HFSource(id=str(copy)))
    marked.add_special_tokens({"additional_special_tokens": ["<start_of_turn>"]})
    assert tokenizer_difference(ours, tokenizer_json(marked)) == \
        f"added tokens differ (id {len(marked) - 1}: '<start_of_turn>', special=True)"
