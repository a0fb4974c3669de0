"""Plain-text tables for the command line: example windows with the firing token highlighted."""

from __future__ import annotations

from typing import Any

import polars as pl

__all__ = ["example_text", "render_examples", "render_frame"]

_MARK = {True: ("\x1b[1;7m", "\x1b[0m"), False: ("[[", "]]")}
_WEAK = {True: ("\x1b[4m", "\x1b[0m"), False: ("", "")}


def _visible(token: str) -> str:
    return token.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def example_text(tokens: list[str], values: list[float], focus: int, *, color: bool = False) -> str:
    """The window as one line: the focus token marked (``[[tok]]`` or reverse video), other
    tokens where the latent fires underlined when ``color``; newlines shown as ``\\n``."""
    out = []
    for i, tok in enumerate(tokens):
        text = _visible(tok)
        if i == focus:
            text = f"{_MARK[color][0]}{text}{_MARK[color][1]}"
        elif values and i < len(values) and values[i] > 0:
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


def render_frame(frame: pl.DataFrame) -> str:
    """A whole frame as an aligned table, lists shortened."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, list):
            return "[" + ", ".join(str(x) for x in v[:8]) + (", ..." if len(v) > 8 else "") + "]"
        return str(v)

    rows = [[cell(v) for v in r] for r in frame.iter_rows()]
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(frame.columns)]
    fmt = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
    return "\n".join([fmt(frame.columns), *map(fmt, rows)])
