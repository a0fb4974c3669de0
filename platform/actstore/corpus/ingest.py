"""Ingestion work as plain functions: build the packing plan, pack one unit, write documents.

The Ray orchestration in :mod:`actstore.cluster.ingest` only decides where these run.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from actstore.config import ContextConfig
from actstore.corpus.packing import PackPlan, fill_contexts
from actstore.corpus.staging import FileSummary, read_staged_docs, read_staged_tokens
from actstore.errors import TokenizerError
from actstore.store._fs import Location, SideFiles
from actstore.store.dtypes import to_storage
from actstore.store.layout import FLAG_SPECIAL, TOKEN_ARRAYS, token_array
from actstore.store.metadata import TokenizerInfo
from actstore.store.store import TOKENS_STAGE, Store

__all__ = ["build_plan", "pack_unit", "write_documents_part"]

DOCUMENTS = "documents"


def build_plan(location: Location, summaries: Sequence[FileSummary], context: ContextConfig, tok: TokenizerInfo) -> tuple[PackPlan, bool]:
    """The packing plan of all staged files, with the ``max_tokens`` cap applied.

    Returns the plan and whether the cap cut the corpus short.
    """
    lengths, files, offsets = [], [], []
    for summary in summaries:
        n_tokens = read_staged_docs(location, summary.index).column("n_tokens").to_numpy()
        lengths.append(n_tokens.astype(np.int64))
        files.append(np.full(len(n_tokens), summary.index, np.int32))
        offsets.append(np.concatenate([[0], np.cumsum(n_tokens)[:-1]]).astype(np.int64))
    doc_len = np.concatenate(lengths) if lengths else np.empty(0, np.int64)
    doc_file = np.concatenate(files) if files else np.empty(0, np.int32)
    doc_offset = np.concatenate(offsets) if offsets else np.empty(0, np.int64)
    truncated = False
    if context.max_tokens is not None and doc_len.sum() > context.max_tokens:
        truncated = True
        before = np.concatenate([[0], np.cumsum(doc_len)[:-1]])
        doc_len = np.clip(context.max_tokens - before, 0, doc_len)
        keep = int(np.count_nonzero(doc_len))
        doc_len, doc_file, doc_offset = doc_len[:keep], doc_file[:keep], doc_offset[:keep]
    plan = PackPlan(
        ctx_len=context.ctx_len,
        packing=context.packing,
        sep_id=tok.eos_token_id if context.separator == "eos" else None,
        bos_id=tok.bos_token_id,
        pad_id=tok.pad_token_id,
        doc_file=doc_file,
        doc_offset=doc_offset,
        doc_len=doc_len,
        special_ids=tuple(tok.special_ids),
    )
    if context.separator == "eos" and tok.eos_token_id is None:
        raise TokenizerError(f"tokenizer {tok.name_or_path!r} has no EOS token; set context.separator: none")
    return plan, truncated


def pack_unit(store: Store, plan: PackPlan, unit: int) -> int:
    """Write the token shards of one unit, then its manifest. Returns document tokens written."""
    contexts = store.grid.contexts(unit)
    files = store.files
    arrays = fill_contexts(plan, contexts.start, contexts.stop,
                           lambda f, a, b: read_staged_tokens(files, f, a, b))
    rows = slice(contexts.start, contexts.stop)
    store.write_many([(token_array(name), rows, to_storage(arrays[name], dtype)) for name, (dtype, _) in TOKEN_ARRAYS.items()])
    n_doc_tokens = int(np.count_nonzero((arrays["flags"] & FLAG_SPECIAL) == arrays["flags"]))  # flags 0 or special
    store.manifests.commit(TOKENS_STAGE, unit, {"contexts": [contexts.start, contexts.stop], "doc_tokens": n_doc_tokens})
    return n_doc_tokens


def write_documents_part(location: Location, summary: FileSummary, first_doc: int, n_stored: np.ndarray) -> None:
    """The final documents table of one file: global index, source, row, key, lengths, metadata.

    ``n_stored`` holds the stored lengths of this file's documents that survived the cap.
    """
    table = read_staged_docs(location, summary.index).slice(0, len(n_stored))
    n = table.num_rows
    table = table.add_column(0, "doc", pa.array(np.arange(first_doc, first_doc + n, dtype=np.int64)))
    table = table.add_column(1, "source", pa.array([summary.url] * n, pa.string()))
    table = table.add_column(table.schema.get_field_index("n_tokens") + 1, "n_tokens_stored", pa.array(n_stored, pa.int64()))
    sink = io.BytesIO()
    pq.write_table(table, sink)
    SideFiles(location).write_bytes(f"{DOCUMENTS}/part-{summary.index:06d}.parquet", sink.getvalue())
