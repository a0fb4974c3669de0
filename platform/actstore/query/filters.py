"""Document filters: which documents a query reads.

A filter is a polars expression over the columns of ``store.documents()`` (Python:
``where=pl.col("source").str.contains("asyncio")``) or a SQL ``WHERE`` clause over them (CLI
``--where``, the web pages: ``"source LIKE '%asyncio%' AND n_tokens > 100"``), which polars' own
SQL support turns into an expression (:func:`polars.sql_expr`). It is resolved once, against the
documents table only, into a :class:`DocumentSet`: the matching documents and where their
tokens lie on the token axis. That placement is computed from the table's stored lengths and
the store's packing (the plan ingestion packed the contexts by,
:class:`actstore.corpus.packing.PackPlan`), never by reading token arrays, so a query over a
set reads only the set's contexts or filters a posting list by arithmetic.

Subqueries are refused: polars runs a subquery's table functions (``read_csv('/etc/...')``)
while it parses, and the web pages take filters from anyone who can reach them.
"""

from __future__ import annotations

import hashlib
import re
import weakref
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, TypeAlias

import numpy as np
import polars as pl

from actstore.corpus.packing import PackPlan
from actstore.errors import ConfigError

if TYPE_CHECKING:
    from actstore.store.store import Store

__all__ = ["DocumentLayout", "DocumentSet", "Where", "document_layout", "resolve_where"]

Where: TypeAlias = "pl.Expr | str | DocumentSet"
"""What a query's ``where=`` takes: a polars expression, a SQL WHERE clause, or a resolved set."""

_LITERAL = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")  # SQL string literals and quoted identifiers
_SUBQUERY = re.compile(r"\b(select|from|with|values|table)\b", re.IGNORECASE)
_LAYOUTS: weakref.WeakKeyDictionary[Store, DocumentLayout] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class DocumentLayout:
    """Where every stored document lies on the token axis: its stream (tokens, then the EOS
    separator when the store has one) starts at global stream position ``plan.doc_start[d]``
    (``pack``) or at context ``plan.doc_start[d]`` (``document``); every context holds
    ``ctx_len - 1`` stream positions after its BOS."""

    plan: PackPlan
    documents: pl.DataFrame = field(repr=False)  # the documents table, read once

    @property
    def ctx_len(self) -> int:
        return self.plan.ctx_len

    def doc_of(self, flat: np.ndarray) -> np.ndarray:
        """Document of each flat token index (``ctx * ctx_len + pos``); -1 for BOS and padding."""
        flat = np.asarray(flat, np.int64)
        ctx, col = np.divmod(flat, self.ctx_len)
        body, starts, lengths = self.plan.body, self.plan.doc_start, self.plan.stream_len
        if starts.size == 0:
            return np.full(flat.shape, -1, np.int64)
        if self.plan.packing == "pack":
            s = ctx * body + col - 1
            doc = np.searchsorted(starts, s, side="right") - 1
            inside = s < starts[-1] + lengths[-1]
        else:
            doc = np.searchsorted(starts, ctx, side="right") - 1
            inside = (ctx - starts[np.maximum(doc, 0)]) * body + col - 1 < lengths[np.maximum(doc, 0)]
        return np.where((col >= 1) & inside & (doc >= 0), doc, -1)

    def contexts(self, docs: np.ndarray) -> np.ndarray:
        """Sorted contexts holding tokens of ``docs`` (sorted document ids)."""
        body, starts, lengths = self.plan.body, self.plan.doc_start[docs], self.plan.stream_len[docs]
        if self.plan.packing == "pack":
            first, last = starts // body, (starts + lengths - 1) // body
        else:
            first, last = starts, starts + -(-lengths // body) - 1
        sizes = last - first + 1
        if sizes.size == 0:
            return np.zeros(0, np.int64)
        steps = np.ones(int(sizes.sum()), np.int64)  # the ranges end to end, as one cumulative sum
        steps[0] = first[0]
        steps[np.cumsum(sizes)[:-1]] = first[1:] - last[:-1]  # from one range's last context to the next's first
        return np.unique(np.cumsum(steps))


@dataclass(frozen=True)
class DocumentSet:
    """The documents a filter matched, placed on the token axis. ``where``: the filter as text
    (for output), ``docs``: sorted document ids, ``tokens``: their counted tokens (document
    tokens and EOS separators, as the index and the statistics count them)."""

    where: str
    docs: np.ndarray
    tokens: int
    layout: DocumentLayout = field(repr=False)

    @cached_property
    def key(self) -> str:
        """A digest of the matching documents: equal for two filters that match the same ones."""
        return hashlib.blake2b(self.docs.tobytes(), digest_size=12).hexdigest()

    @cached_property
    def contexts(self) -> np.ndarray:
        """Sorted contexts holding the set's tokens: what a token-major read of the set reads."""
        return self.layout.contexts(self.docs)

    @cached_property
    def _member(self) -> np.ndarray:
        member = np.zeros(self.layout.plan.doc_len.size + 1, bool)  # the last entry stands for -1
        member[self.docs] = True
        return member

    def doc_of(self, flat: np.ndarray) -> np.ndarray:
        """Document of each flat token index when it is one of the set's, else -1."""
        doc = self.layout.doc_of(flat)
        return np.where(self._member[doc], doc, -1)

    def contains(self, flat: np.ndarray) -> np.ndarray:
        """Whether each flat token index is a counted token of the set's documents."""
        return np.asarray(self._member[self.layout.doc_of(flat)])

    def slots(self, contexts: np.ndarray) -> np.ndarray:
        """Document of every slot of ``contexts`` ([len(contexts), ctx_len]) when it is a token of
        the set, else -1 (BOS, padding and other documents' tokens)."""
        ctx_len = self.layout.ctx_len
        flat = np.asarray(contexts, np.int64)[:, None] * ctx_len + np.arange(ctx_len)[None, :]
        return self.doc_of(flat)


def document_layout(store: Store) -> DocumentLayout:
    """The store's documents table and their placement, read once per open store."""
    layout = _LAYOUTS.get(store)
    if layout is None:
        table = store.documents().collect()
        meta = store.meta
        if "n_tokens_stored" not in table.columns:
            raise ConfigError(f"the documents table of {store.location.url!r} has no n_tokens_stored column: "
                              "documents cannot be placed on the token axis, so it cannot be filtered")
        doc, length = table["doc"].to_numpy(), table["n_tokens_stored"].to_numpy().astype(np.int64)
        plan = PackPlan(ctx_len=meta.ctx_len, packing=meta.packing, sep_id=0 if meta.separator == "eos" else None,
                        bos_id=0, pad_id=0, doc_file=np.zeros(doc.size, np.int32), doc_offset=np.zeros(doc.size, np.int64),
                        doc_len=length)
        if not np.array_equal(doc, np.arange(doc.size)) or plan.n_ctx != meta.n_ctx:
            raise ConfigError(f"the documents table of {store.location.url!r} does not match its token axis "
                              f"({doc.size} documents filling {plan.n_ctx} contexts, the store has {meta.n_ctx})")
        layout = _LAYOUTS[store] = DocumentLayout(plan, table)
    return layout


def resolve_where(store: Store, where: Where | None) -> DocumentSet | None:
    """The documents ``where`` matches (None: no filter). A SQL string is parsed by polars; an
    unknown column, bad syntax or a non-boolean filter is a one-line :class:`ConfigError` naming
    the columns there are, raised before any query work. A :class:`DocumentSet` passes through."""
    if where is None or isinstance(where, DocumentSet):
        return where
    layout = document_layout(store)
    columns = layout.documents.columns
    expr, text = _expression(where, columns)
    unknown = sorted(set(expr.meta.root_names()) - set(columns))
    if unknown:
        raise ConfigError(f"the document filter {text!r} names unknown columns {unknown}; the documents table has "
                          f"{columns}")
    try:
        docs = layout.documents.lazy().filter(expr).select("doc").collect()["doc"].to_numpy()
    except pl.exceptions.PolarsError as exc:
        raise ConfigError(f"the document filter {text!r} cannot be applied: {_first_line(exc)}; the documents table "
                          f"has {columns}") from None
    docs = np.unique(docs.astype(np.int64))
    return DocumentSet(text, docs, int(layout.plan.stream_len[docs].sum()), layout)


def _expression(where: pl.Expr | str, columns: list[str]) -> tuple[pl.Expr, str]:
    """(polars expression, its text) of a filter."""
    if isinstance(where, pl.Expr):
        return where, str(where)
    if not isinstance(where, str) or not where.strip():
        raise ConfigError(f"a document filter is a polars expression or a SQL WHERE clause, got {where!r}")
    if _SUBQUERY.search(_LITERAL.sub("''", where)):
        raise ConfigError(f"the document filter {where!r} holds a subquery (SELECT, FROM, WITH, VALUES or TABLE); "
                          f"a filter is a WHERE clause over the columns {columns}")
    try:
        return pl.sql_expr(where), where
    except pl.exceptions.PolarsError as exc:
        raise ConfigError(f"the document filter {where!r} is not a SQL WHERE clause: {_first_line(exc)}; the "
                          f"documents table has {columns}") from None


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
