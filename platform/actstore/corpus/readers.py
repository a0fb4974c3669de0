"""Readers that turn one corpus file into documents, with errors that name the file and line."""

from __future__ import annotations

import codecs
import contextlib
import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import fsspec
import zstandard

from actstore.config import CorpusConfig
from actstore.corpus.sources import SourceFile
from actstore.errors import CorpusError, StorageAccessError

__all__ = ["Document", "read_documents"]


@dataclass(frozen=True)
class Document:
    """One document of a file: its text (or, for a chat record, its messages), row (0-based line
    or row), optional key and metadata."""

    text: str
    row: int
    key: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    repaired: bool = False
    stripped_bom: bool = False
    messages: list[dict[str, str]] | None = None  # a chat record, rendered through the chat template at staging

    @property
    def format(self) -> str:
        """``chat`` for a record of messages, ``text`` otherwise (the documents table's ``format`` column)."""
        return "text" if self.messages is None else "chat"


def read_documents(source: SourceFile, config: CorpusConfig) -> Iterator[Document]:
    """Yield the documents of one file in file order."""
    try:
        with fsspec.open(source.url, "rb", **config.storage_options) as raw, _decompressed(raw, source.compression) as handle:
            if source.format == "jsonl":
                yield from _read_jsonl(handle, source.url, config)
            elif source.format == "parquet":
                yield from _read_parquet(handle, source.url, config)
            else:
                yield _read_text(handle.read(), source.url, config)
    except PermissionError as exc:
        raise StorageAccessError(f"cannot read corpus file {source.url!r}: access denied ({exc})") from None
    except FileNotFoundError:
        raise CorpusError(f"corpus file {source.url!r} disappeared or cannot be opened") from None
    except (OSError, EOFError, zstandard.ZstdError) as exc:
        raise CorpusError(f"cannot read corpus file {source.url!r}: {exc}") from None


def _decompressed(raw: Any, compression: str | None) -> Any:
    """A line-iterable binary reader over the (possibly compressed) file."""
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw)
    if compression == "zstd":
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw))
    return contextlib.nullcontext(raw)


def _decode(raw: bytes, url: str, line: int, config: CorpusConfig) -> tuple[str, bool]:
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError as exc:
        if config.encoding_errors == "replace":
            return raw.decode("utf-8", errors="replace"), True
        line += raw[: exc.start].count(b"\n")
        raise CorpusError(
            f"{url}:{line}: bytes are not valid UTF-8 ({exc.reason} at byte {exc.start}); "
            "fix the file or set corpus.encoding_errors: replace"
        ) from None


def _document(record: dict[str, Any], row: int, where: str, config: CorpusConfig, *, repaired: bool = False,
              stripped_bom: bool = False) -> Document:
    """The document of one record: its text, or with ``corpus.chat_template`` its messages."""
    key = record.get(config.key_field) if config.key_field else None
    metadata = {name: record.get(name) for name in config.metadata_fields}
    key = None if key is None else str(key)
    if config.chat_template and record.get(config.messages_field) is not None:
        messages = _messages(record[config.messages_field], where, config)
        return Document("", row, key, metadata, repaired, stripped_bom, messages=messages)
    if config.text_field not in record:
        hint = (f"; it holds {config.messages_field!r}: set corpus.chat_template: true to render chat records"
                if config.messages_field in record and not config.chat_template else "; set corpus.text_field")
        raise CorpusError(
            f"{where}: missing text field {config.text_field!r} (fields present: {sorted(record)[:10]}){hint}"
        )
    text = record[config.text_field]
    if text is None:
        raise CorpusError(f"{where}: text field {config.text_field!r} is null; drop the record or give it a string")
    if not isinstance(text, str):
        raise CorpusError(f"{where}: text field {config.text_field!r} holds {type(text).__name__}, not a string")
    return Document(text, row, key, metadata, repaired, stripped_bom)


def _messages(value: Any, where: str, config: CorpusConfig) -> list[dict[str, str]]:
    """A chat record's messages: a non-empty list of objects with string ``role`` and ``content``."""
    field_name = config.messages_field
    if not isinstance(value, list) or not value:
        raise CorpusError(f"{where}: {field_name!r} must be a non-empty list of {{role, content}} objects, "
                          f"found {type(value).__name__}")
    for i, message in enumerate(value):
        if not (isinstance(message, dict) and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), str)):
            raise CorpusError(f"{where}: {field_name}[{i}] must be an object with string role and content, found {message!r:.80}")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _strip_bom(raw: bytes) -> tuple[bytes, bool]:
    """A UTF-8 byte-order mark at the start of a file is tolerated: editors on Windows write one."""
    return (raw[len(codecs.BOM_UTF8):], True) if raw.startswith(codecs.BOM_UTF8) else (raw, False)


def _read_jsonl(handle: Any, url: str, config: CorpusConfig) -> Iterator[Document]:
    bom = False
    for row, raw in enumerate(handle):
        line = row + 1
        if row == 0:
            raw, bom = _strip_bom(raw)
        text_line, repaired = _decode(raw, url, line, config)
        if not text_line.strip():
            continue
        try:
            record = json.loads(text_line)
        except json.JSONDecodeError as exc:
            # some messages end in "at" themselves ("Invalid control character at")
            raise CorpusError(f"{url}:{line}: not valid JSON ({exc.msg.removesuffix(' at')} at column {exc.colno})") from None
        if not isinstance(record, dict):
            raise CorpusError(f"{url}:{line}: expected a JSON object, found {type(record).__name__}")
        yield _document(record, row, f"{url}:{line}", config, repaired=repaired, stripped_bom=bom and row == 0)


def _read_parquet(handle: Any, url: str, config: CorpusConfig) -> Iterator[Document]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(handle)
    names = set(parquet.schema_arrow.names)
    if config.text_field not in names and not (config.chat_template and config.messages_field in names):
        raise CorpusError(f"{url}: missing text column {config.text_field!r} (columns: {sorted(names)[:10]})")
    chat = [config.messages_field] if config.chat_template else []
    wanted = [config.text_field, *chat, *([config.key_field] if config.key_field else []), *config.metadata_fields]
    columns = [c for c in dict.fromkeys(wanted) if c in names]
    row = 0
    for batch in parquet.iter_batches(columns=columns, batch_size=4096):
        for record in batch.to_pylist():
            yield _document(record, row, f"{url}: row {row}", config)
            row += 1


def _read_text(raw: bytes, url: str, config: CorpusConfig) -> Document:
    raw, bom = _strip_bom(raw)
    text, repaired = _decode(raw, url, 1, config)
    return Document(text, 0, None, {}, repaired, stripped_bom=bom)
