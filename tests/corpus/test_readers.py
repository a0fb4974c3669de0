"""Readers: formats, compression, and every kind of bad input named by file and line."""

import codecs
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from actstore.config import CorpusConfig
from actstore.corpus.readers import read_documents
from actstore.corpus.sources import expand_sources
from actstore.errors import CorpusError
from tests.helpers import write_jsonl


def _docs(path: Path, **cfg):
    config = CorpusConfig(paths=[str(path)], **cfg)
    [source] = expand_sources(config.paths, fmt=config.format)
    return list(read_documents(source, config))


@pytest.mark.parametrize("compression,suffix", [(None, ".jsonl"), ("gzip", ".jsonl.gz"), ("zstd", ".jsonl.zst")])
def test_jsonl_plain_and_compressed(tmp_path, compression, suffix) -> None:
    path = write_jsonl(tmp_path / f"c{suffix}", [{"text": "a b", "id": 7, "lang": "en"}, {"text": "c"}], compression=compression)
    docs = _docs(path, key_field="id", metadata_fields=["lang"])
    assert [(d.text, d.row, d.key, d.metadata) for d in docs] == [("a b", 0, "7", {"lang": "en"}), ("c", 1, None, {"lang": None})]


def test_parquet_and_text(tmp_path) -> None:
    pq.write_table(pa.table({"body": ["x", "y"], "src": ["s1", "s2"]}), tmp_path / "p.parquet")
    assert [(d.text, d.metadata) for d in _docs(tmp_path / "p.parquet", text_field="body", metadata_fields=["src"])] == [
        ("x", {"src": "s1"}), ("y", {"src": "s2"})]
    (tmp_path / "t.py").write_text("print(1)\n")
    assert [d.text for d in _docs(tmp_path / "t.py")] == ["print(1)\n"]


def test_malformed_json_names_file_and_line(tmp_path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n{"text": "broken"\n')
    with pytest.raises(CorpusError, match=r"bad\.jsonl:2: not valid JSON"):
        _docs(path)


def test_missing_text_field_names_file_and_line(tmp_path) -> None:
    path = write_jsonl(tmp_path / "m.jsonl", [{"text": "ok"}, {"body": "no text here"}])
    with pytest.raises(CorpusError, match=r"m\.jsonl:2: missing text field 'text'.*body"):
        _docs(path)


def test_null_text_is_named_as_null(tmp_path) -> None:
    path = write_jsonl(tmp_path / "n.jsonl", [{"text": "ok"}, {"text": None}])
    with pytest.raises(CorpusError, match=r"n\.jsonl:2: text field 'text' is null"):
        _docs(path)


def test_nul_byte_message_reads_once(tmp_path) -> None:
    path = tmp_path / "nul.jsonl"
    path.write_bytes(b'{"text": "a\x00b"}\n')
    with pytest.raises(CorpusError, match=r"nul\.jsonl:1: not valid JSON \(Invalid control character at column 12\)$"):
        _docs(path)


def test_utf8_byte_order_mark_is_stripped_and_counted(tmp_path) -> None:
    (tmp_path / "b.jsonl").write_bytes(codecs.BOM_UTF8 + b'{"text": "first"}\n{"text": "second"}\n')
    docs = _docs(tmp_path / "b.jsonl")
    assert [(d.text, d.stripped_bom) for d in docs] == [("first", True), ("second", False)]
    (tmp_path / "b.txt").write_bytes(codecs.BOM_UTF8 + b"print(1)\n")
    [doc] = _docs(tmp_path / "b.txt")
    assert doc.text == "print(1)\n" and doc.stripped_bom


def test_non_utf8_is_an_error_or_a_counted_repair(tmp_path) -> None:
    path = tmp_path / "enc.jsonl"
    path.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(CorpusError, match=r"enc\.jsonl:2: bytes are not valid UTF-8.*encoding_errors: replace"):
        _docs(path)
    docs = _docs(path, encoding_errors="replace")
    assert [d.repaired for d in docs] == [False, True] and docs[1].text == "caf\ufffd"


def test_paths_that_match_nothing(tmp_path) -> None:
    with pytest.raises(CorpusError, match="matches no file"):
        expand_sources([str(tmp_path / "missing.jsonl")])
    with pytest.raises(CorpusError, match="matches no file"):
        expand_sources([str(tmp_path / "*.jsonl")])
    with pytest.raises(CorpusError, match="is a directory"):
        expand_sources([str(tmp_path)])


def test_unreadable_file(tmp_path) -> None:
    import os

    path = write_jsonl(tmp_path / "locked.jsonl", [{"text": "x"}])
    path.chmod(0)
    if os.access(path, os.R_OK):
        pytest.skip("running as a user who can read any file (root)")
    with pytest.raises(PermissionError, match="locked.jsonl"):
        _docs(path)


def test_corrupt_compressed_file(tmp_path) -> None:
    path = tmp_path / "c.jsonl.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(CorpusError, match=r"c\.jsonl\.gz"):
        _docs(path)


def test_sources_are_sorted_and_globbed(tmp_path) -> None:
    for name in ("b.jsonl", "a.jsonl", "c.txt"):
        (tmp_path / name).write_text('{"text": "x"}\n')
    found = expand_sources([str(tmp_path / "*.jsonl"), str(tmp_path / "c.txt"), str(tmp_path / "a.jsonl")])
    assert [Path(s.url).name for s in found] == ["a.jsonl", "b.jsonl", "c.txt"]
    assert [s.format for s in found] == ["jsonl", "jsonl", "text"]
