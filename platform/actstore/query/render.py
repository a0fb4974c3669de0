"""Plain-text tables for the command line: example windows with the firing token highlighted."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import polars as pl

from actstore.query.text import terminal_safe
from actstore.query.windows import token_runs

if TYPE_CHECKING:
    from actstore.query.tokens import TextMatches

__all__ = ["example_text", "render_examples", "render_frame", "render_matches"]

_MARK = {True: ("\x1b[1;7m", "\x1b[0m"), False: ("[[", "]]")}
_WEAK = {True: ("\x1b[4m", "\x1b[0m"), False: ("", "")}


def example_text(tokens: list[str], values: list[float], focus: int, *, color: bool = False, length: int = 1) -> str:
    """The window as one line: the focus token (and the ``length - 1`` after it, for a matched
    span) marked as one run (``[[...]]`` or reverse video), other tokens where the latent fires
    underlined when ``color``. A character split over tokens is marked whole (the tokens of a
    :func:`token_runs` run go together); newlines and every control or bidi character are
    written as escapes (``\\n``, ``\\x1b``, ``\\u202e``)."""
    out = []
    stop = focus + max(length, 1)
    marked = [(a, b) for a, b in token_runs(tokens) if a < stop and b > focus]
    first, last = (marked[0][0], marked[-1][1]) if marked else (-1, -1)
    for a, b in token_runs(tokens):
        text = terminal_safe("".join(tokens[a:b]) or "\ufffd")
        if a == first:
            text = _MARK[color][0] + text
        if b == last:
            text += _MARK[color][1]
        elif not first <= a < last and any(v > 0 for v in values[a:b]):
            text = f"{_WEAK[color][0]}{text}{_WEAK[color][1]}"
        out.append(text)
    return "".join(out)


def render_examples(frame: pl.DataFrame, *, color: bool = False, lead: tuple[str, ...] = ()) -> str:
    """One line per example: the ``lead`` columns, value, doc, ctx:pos, then the window."""
    lines = []
    for row in frame.iter_rows(named=True):
        head = "  ".join(f"{row[c]:>4}" for c in lead)
        text = example_text(row["tokens"], row["values"], row["focus"], color=color)
        lines.append(f"{head}  {row['value']:9.4f}  doc {row['doc']:<7} {row['ctx']:>7}:{row['pos']:<5} {text}".lstrip())
    return "\n".join(lines)


def render_matches(found: TextMatches, *, color: bool = False) -> str:
    """A search's result: the forms searched with their counts, the total, then one line per
    match shown (doc, ctx:pos, the window with the whole matched span marked)."""
    forms = "; ".join(f"{f.text!r} ({len(f.token_ids)} tokens): {f.count:,}" for f in found.forms)
    shown = found.matches.height
    more = f", showing the first {shown:,}" if shown < found.total else ""
    lines = [f"searched {forms}", f"{found.total:,} match{'es' if found.total != 1 else ''}{more}"]
    for row in found.matches.iter_rows(named=True):
        text = example_text(row["tokens"], [], row["focus"], color=color, length=row["length"])
        lines.append(f"doc {row['doc']:<7} {row['ctx']:>7}:{row['pos']:<5} {text}")
    return "\n".join(lines)


def render_frame(frame: pl.DataFrame) -> str:
    """A whole frame as an aligned table, lists shortened, control and bidi characters escaped."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, list):
            return "[" + ", ".join(terminal_safe(str(x)) for x in v[:8]) + (", ..." if len(v) > 8 else "") + "]"
        return terminal_safe(str(v))

    rows = [[cell(v) for v in r] for r in frame.iter_rows()]
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(frame.columns)]
    fmt = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
    return "\n".join([fmt(frame.columns), *map(fmt, rows)])
