"""How corpus text, token windows and labels reach a page: escaped, isolated, controls shown.

These are the templates' filters. Everything returns :class:`markupsafe.Markup` built from
escaped pieces, so corpus text and labels stay text. Control and bidi formatting characters
(:mod:`actstore.query.text`) show as a small box naming them (``RLO``), never act: a label
holding a right-to-left override reads as typed. Labels and windows are set in ``<bdi>``, so
right-to-left text inside them keeps its own order without reordering the table around it.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup, escape

from actstore.query.text import control_name, split_controls
from actstore.query.windows import token_runs

__all__ = ["Run", "bidi", "runs", "shade", "visible"]

_GLYPHS = {"\n": "⏎", "\t": "⇥", "\r": "␍"}  # in a token window: visible, and the line is kept
CUT = "\ufffd"  # shows bytes of a character cut off by the window's edge


def _controls_shown(text: str, glyphs: dict[str, str]) -> Markup:
    out = []
    for piece, control in split_controls(text):
        if control and piece in glyphs:
            out.append(escape(glyphs[piece]))
        elif control:
            name = unicodedata.name(piece, "control character")
            out.append(Markup('<span class="ctl" title="U+{:04X} {}">{}</span>').format(ord(piece), name, control_name(piece)))
        else:
            out.append(escape(piece))
    return Markup("").join(out)


def visible(token: str) -> Markup:
    """A token's text for a window: newlines, tabs and carriage returns as ⏎ ⇥ ␍, other control
    and bidi characters as named boxes."""
    return _controls_shown(token, _GLYPHS)


def bidi(text: Any) -> Markup:
    """A label or other free text: isolated in ``<bdi>`` (its direction from its own first
    strong character), control and bidi characters as named boxes."""
    return Markup("<bdi>{}</bdi>").format(_controls_shown(str(text), {}))


def shade(value: float | None, top: float) -> int:
    """The shade class (0-9) of ``value``: tenths of ``top`` (the latent's largest value)."""
    return min(int(10 * value / top), 9) if top and value and value > 0 else 0


@dataclass(frozen=True)
class Run:
    """The tokens of a window that show as one piece of text (one, or those of a character
    split over several): its text, shade, tooltip, and whether it holds the firing token."""

    text: str
    shade: int
    title: str
    focus: bool
    tokens: int


def runs(row: dict[str, Any], top: float) -> list[Run]:
    """A window row (``tokens``, ``values``, ``focus``, optional ``length``) as runs to draw: a
    character whose bytes span several tokens is one run, shaded by the largest value among
    them, marked when any of them is the firing token (or in a matched span)."""
    tokens, values = row["tokens"], row.get("values") or []
    focus, stop = row["focus"], row["focus"] + max(int(row.get("length") or 1), 1)
    out = []
    for a, b in token_runs(tokens):
        vals = [float(v) for v in values[a:b]] or [0.0]
        title = f"{vals[0]:.4g}" if b - a == 1 else (
            f"{b - a} tokens shown together (a character split over them), values " + ", ".join(f"{v:.4g}" for v in vals))
        out.append(Run("".join(tokens[a:b]) or CUT, shade(max(vals), top), title, a < stop and b > focus, b - a))
    return out
