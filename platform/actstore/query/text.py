"""Corpus text and labels made safe to show: characters that would act instead of show.

Control characters (C0, DEL, C1: a terminal's escape sequences start with one) and the Unicode
bidirectional formatting characters (a right-to-left override makes a label reading "evil.exe"
display as "exe.live", and flips whatever follows it on the line) are never passed on raw. Each
gets a short visible name here; the terminal renderers (:mod:`actstore.query.render`) print it
as an escape (``\\x1b``, ``\\u202e``), the web pages as a marked box. Text around them, right-to-left
scripts included, is left as it is.
"""

from __future__ import annotations

import re

__all__ = ["BIDI_CONTROLS", "control_name", "split_controls", "terminal_safe"]

BIDI_CONTROLS = {
    "\u061c": "ALM", "\u200e": "LRM", "\u200f": "RLM", "\u202a": "LRE", "\u202b": "RLE", "\u202c": "PDF",
    "\u202d": "LRO", "\u202e": "RLO", "\u2066": "LRI", "\u2067": "RLI", "\u2068": "FSI", "\u2069": "PDI",
}
_ACTING = re.compile("([\x00-\x1f\x7f-\x9f" + "".join(BIDI_CONTROLS) + "])")


def control_name(char: str) -> str:
    """A visible name for a control character: the bidi ones by their abbreviation (``RLO``),
    others by code point (``U+001B``)."""
    return BIDI_CONTROLS.get(char) or f"U+{ord(char):04X}"


def split_controls(text: str) -> list[tuple[str, bool]]:
    """``text`` as pieces ``(piece, is_control)``: plain runs, and each control character alone."""
    return [(piece, i % 2 == 1) for i, piece in enumerate(_ACTING.split(text)) if piece]


def terminal_safe(text: str) -> str:
    """``text`` with every control and bidi character written as its Python escape (a newline as
    ``\\n``, ESC as ``\\x1b``, a right-to-left override as ``\\u202e``): nothing in it can move the
    cursor, recolour the terminal or reorder the line."""
    return _ACTING.sub(lambda m: m.group(1).encode("unicode_escape").decode("ascii"), text)
