"""Packing documents into contexts: a deterministic plan, and the filling of one unit from it.

Each document contributes its tokens followed by an optional separator (EOS): its *stream*.
``pack`` lays the streams end to end and cuts them into pieces of ``ctx_len - 1`` tokens;
``document`` gives every document its own contexts. Every context starts with BOS; what is left
at the end of a context is padding. A special token inside a document (a chat-template marker)
keeps its place and is flagged ``FLAG_SPECIAL``. The plan depends only on document order and lengths, never
on how many workers tokenized, so the packed arrays are identical whatever the parallelism.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from actstore.store.layout import FLAG_BOS, FLAG_EOS, FLAG_PAD, FLAG_SPECIAL

__all__ = ["PackPlan", "Segment", "fill_contexts"]


@dataclass(frozen=True)
class Segment:
    """Doc-stream positions ``[start, stop)`` of document ``doc`` placed in ``ctx`` from ``col``."""

    ctx: int
    col: int
    doc: int
    start: int
    stop: int


@dataclass(frozen=True)
class PackPlan:
    """Where every stored document goes. Arrays are per document, in global document order."""

    ctx_len: int
    packing: Literal["pack", "document"]
    sep_id: int | None
    bos_id: int
    pad_id: int
    doc_file: np.ndarray  # int32: index of the source file
    doc_offset: np.ndarray  # int64: first token of the document in its file's token stream
    doc_len: np.ndarray  # int64: tokens stored (after the max_tokens cap)
    special_ids: tuple[int, ...] = ()  # ids flagged FLAG_SPECIAL inside documents

    @property
    def body(self) -> int:
        return self.ctx_len - 1

    @property
    def stream_len(self) -> np.ndarray:
        return self.doc_len + (0 if self.sep_id is None else 1)

    @property
    def doc_start(self) -> np.ndarray:
        """pack: first global stream position of each document; document: its first context."""
        per_doc = self.stream_len if self.packing == "pack" else -(-self.stream_len // self.body)
        return np.concatenate([[0], np.cumsum(per_doc)[:-1]]).astype(np.int64)

    @property
    def n_ctx(self) -> int:
        if len(self.doc_len) == 0:
            return 0
        if self.packing == "pack":
            return int(-(-int(self.stream_len.sum()) // self.body))
        return int((-(-self.stream_len // self.body)).sum())

    def segments(self, c0: int, c1: int) -> list[Segment]:
        """The document pieces of contexts ``[c0, c1)``, in order."""
        starts, lens, body = self.doc_start, self.stream_len, self.body
        out: list[Segment] = []
        if self.packing == "pack":
            s0, s1 = c0 * body, c1 * body
            first = int(np.searchsorted(starts + lens, s0, side="right"))
            last = int(np.searchsorted(starts, s1, side="left"))
            for d in range(first, last):
                a, b = max(s0, int(starts[d])), min(s1, int(starts[d] + lens[d]))
                while a < b:  # a document may span several contexts
                    ctx, col = divmod(a, body)
                    piece = min(b, (ctx + 1) * body)
                    out.append(Segment(ctx, col + 1, d, a - int(starts[d]), piece - int(starts[d])))
                    a = piece
        else:
            for ctx in range(c0, c1):
                d = int(np.searchsorted(starts, ctx, side="right")) - 1
                k = ctx - int(starts[d])
                out.append(Segment(ctx, 1, d, k * body, min((k + 1) * body, int(lens[d]))))
        return out


TokenReader = Callable[[int, int, int], np.ndarray]
"""``read(file, start, stop)`` returns tokens ``[start, stop)`` of a file's token stream."""


def fill_contexts(plan: PackPlan, c0: int, c1: int, read: TokenReader) -> dict[str, np.ndarray]:
    """The token arrays (ids, doc, pos, flags) of contexts ``[c0, c1)``."""
    n, length = c1 - c0, plan.ctx_len
    ids = np.full((n, length), plan.pad_id, dtype=np.int32)
    doc = np.full((n, length), -1, dtype=np.int64)
    pos = np.full((n, length), -1, dtype=np.int32)
    flags = np.full((n, length), FLAG_PAD, dtype=np.uint8)
    ids[:, 0], flags[:, 0] = plan.bos_id, FLAG_BOS
    segments = plan.segments(c0, c1)
    tokens = _read_segments(plan, segments, read)
    for seg, toks in zip(segments, tokens, strict=True):
        row, n_text = seg.ctx - c0, len(toks)
        cols = slice(seg.col, seg.col + (seg.stop - seg.start))
        doc[row, cols] = seg.doc
        pos[row, cols] = np.arange(seg.start, seg.stop, dtype=np.int32)
        flags[row, cols] = 0
        ids[row, seg.col : seg.col + n_text] = toks
        if plan.special_ids:
            flags[row, seg.col : seg.col + n_text][np.isin(toks, plan.special_ids)] = FLAG_SPECIAL
        if n_text < seg.stop - seg.start:  # the separator closes this piece
            assert plan.sep_id is not None
            ids[row, seg.col + n_text] = plan.sep_id
            flags[row, seg.col + n_text] = FLAG_EOS
    return {"ids": ids, "doc": doc, "pos": pos, "flags": flags}


def _read_segments(plan: PackPlan, segments: list[Segment], read: TokenReader) -> list[np.ndarray]:
    """Text tokens of each segment, with one read per run of segments from the same file."""
    out: list[np.ndarray] = []
    i = 0
    while i < len(segments):
        file = int(plan.doc_file[segments[i].doc])
        j = i
        while j < len(segments) and int(plan.doc_file[segments[j].doc]) == file:
            j += 1
        run = segments[i:j]
        spans = [
            (int(plan.doc_offset[s.doc]) + s.start, int(plan.doc_offset[s.doc]) + min(s.stop, int(plan.doc_len[s.doc])))
            for s in run
        ]
        lo, hi = spans[0][0], max(b for _, b in spans)
        block = read(file, lo, hi) if hi > lo else np.empty(0, np.int32)
        out.extend(block[a - lo : max(a, b) - lo] for a, b in spans)
        i = j
    return out
