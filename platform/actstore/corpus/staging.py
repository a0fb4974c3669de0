"""Staging of tokenized files: the first ingestion pass, one task per corpus file.

A task reads one file, tokenizes its documents in batches and writes two objects next to the
store: ``_staging/ingest/f<i>.tokens`` (the file's document tokens end to end, little-endian
int32) and ``_staging/ingest/f<i>.docs.parquet`` (per document: row, key, length, format, metadata).
Re-running a task rewrites the same bytes. Staging is removed when ingestion completes.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from actstore.config import CorpusConfig
from actstore.corpus.chat import ChatRenderer
from actstore.corpus.readers import Document, read_documents
from actstore.corpus.sources import SourceFile
from actstore.store._fs import Location, SideFiles

__all__ = ["FileSummary", "read_staged_docs", "read_staged_tokens", "stage_file"]

STAGING = "_staging/ingest"
BATCH_DOCS = 256
TOKEN_DTYPE = np.dtype("<i4")


@dataclass(frozen=True)
class FileSummary:
    """What tokenizing one file produced."""

    index: int
    url: str
    n_documents: int
    n_tokens: int
    skipped_empty: int
    repaired_utf8: int
    stripped_bom: int = 0
    chat_records: int = 0


def _key(index: int, suffix: str) -> str:
    return f"{STAGING}/f{index:06d}.{suffix}"


def stage_file(index: int, source: SourceFile, corpus: CorpusConfig, tokenizer: Any, location: Location, *,
               limit: int | None = None) -> FileSummary:
    """Tokenize one file into staging (documents that yield no tokens are skipped and counted).

    With ``limit`` (the run's ``max_tokens``) reading stops after the batch that brings the
    file's tokens to the limit: the cap keeps no more than that from any one file.
    """
    token_parts: list[np.ndarray] = []
    n_tokens = 0
    rows: list[dict[str, Any]] = []
    skipped = repaired = bom = 0
    batch: list[Document] = []
    chat = ChatRenderer(tokenizer, add_generation_prompt=corpus.add_generation_prompt) if corpus.chat_template else None

    def flush() -> None:
        nonlocal skipped, n_tokens
        encoded = tokenizer([_text(d, chat, source) for d in batch], add_special_tokens=False)["input_ids"]
        for document, ids in zip(batch, encoded, strict=True):
            if chat is not None and document.messages is not None:
                ids = chat.trim(ids)
            if not ids:
                skipped += 1
                continue
            token_parts.append(np.asarray(ids, dtype=TOKEN_DTYPE))
            n_tokens += len(ids)
            rows.append({"row": document.row, "key": document.key, "n_tokens": len(ids),
                         "repaired": document.repaired, "format": document.format, **document.metadata})
        batch.clear()

    for document in read_documents(source, corpus):
        repaired += document.repaired
        bom += document.stripped_bom
        batch.append(document)
        if len(batch) >= BATCH_DOCS:
            flush()
            if limit is not None and n_tokens >= limit:
                break
    if batch:
        flush()
    tokens = np.concatenate(token_parts) if token_parts else np.empty(0, TOKEN_DTYPE)
    files = SideFiles(location)
    files.write_bytes(_key(index, "tokens"), tokens.tobytes())
    files.write_bytes(_key(index, "docs.parquet"), _docs_parquet(rows, corpus.metadata_fields))
    return FileSummary(index, source.url, len(rows), int(tokens.size), skipped, repaired, bom,
                       sum(r["format"] == "chat" for r in rows))


def _text(document: Document, chat: ChatRenderer | None, source: SourceFile) -> str:
    """A document's text; a chat record's as its template renders it."""
    if document.messages is None or chat is None:
        return document.text
    where = f"{source.url}:{document.row + 1}" if source.format == "jsonl" else f"{source.url}: row {document.row}"
    return chat.text(document.messages, where)


def _docs_parquet(rows: list[dict[str, Any]], metadata_fields: list[str]) -> bytes:
    columns: dict[str, pa.Array] = {
        "row": pa.array([r["row"] for r in rows], pa.int64()),
        "key": pa.array([r["key"] for r in rows], pa.string()),
        "n_tokens": pa.array([r["n_tokens"] for r in rows], pa.int64()),
        "repaired": pa.array([r["repaired"] for r in rows], pa.bool_()),
        "format": pa.array([r["format"] for r in rows], pa.string()),
    }
    for name in metadata_fields:
        values = [r.get(name) for r in rows]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types: keep them, as JSON text
            columns[name] = pa.array([None if v is None else json.dumps(v) for v in values], pa.string())
    sink = io.BytesIO()
    pq.write_table(pa.table(columns), sink)
    return sink.getvalue()


def read_staged_docs(location: Location, index: int) -> pa.Table:
    return pq.read_table(io.BytesIO(SideFiles(location).read_bytes(_key(index, "docs.parquet"))))


def read_staged_tokens(files: SideFiles, index: int, start: int, stop: int) -> np.ndarray:
    """Tokens ``[start, stop)`` of a staged file (a ranged read)."""
    item = TOKEN_DTYPE.itemsize
    raw = files.read_range(_key(index, "tokens"), start * item, stop * item)
    return np.frombuffer(raw, dtype=TOKEN_DTYPE).astype(np.int32)


def clear_staging(location: Location) -> None:
    SideFiles(location).remove(STAGING.split("/")[0])
