"""The contrast page and its JSON twin: two document sets of one SAE compared
(``latents.contrast``), as the ranked table and a volcano plot (effect against -log10 q).

The JSON API returns :meth:`Contrast.to_dict` exactly, the frame ``actstore contrast --json``
prints. A contrast reads both sides' codes, so the last few results are kept per SAE object
(a page view and its API call, or a table re-sorted by the browser, compute it once).
"""

from __future__ import annotations

import math
import weakref
from typing import Any

import numpy as np

from actstore.contrast.documents import Contrast
from actstore.errors import RequestError
from actstore.web.plots import ScatterChart, scatter_chart
from actstore.web.source import StoreSource
from actstore.web.views import LIMITS, bounded

__all__ = ["UNITS", "VOLCANO_POINTS", "contrast_result", "contrast_view", "volcano"]

UNITS = ("auto", "document", "context")
VOLCANO_POINTS = 2000  # the most significant latents drawn; the rest sit at q ~ 1 (y ~ 0)
SIGNIFICANT = 0.05
KEPT = 4
_RESULTS: weakref.WeakKeyDictionary[Any, dict[tuple[str, str, str], Contrast]] = weakref.WeakKeyDictionary()


def contrast_result(source: StoreSource, sae: str, *, a: str, b: str = "", unit: str = "auto") -> Contrast:
    """``latents.contrast(a, b or None, unit=unit)``, checked first and kept (the last few per SAE)."""
    if not a.strip():
        raise RequestError("say which documents to contrast: a is a SQL WHERE clause over the documents table")
    if unit not in UNITS:
        raise RequestError(f"unit must be one of {list(UNITS)}, got {unit!r}")
    for name, text in (("a", a), ("b", b)):
        if len(text) > LIMITS["text"]:
            raise RequestError(f"{name} is {len(text)} characters long; at most {LIMITS['text']} are allowed")
    latents = source.sae(sae)
    kept = _RESULTS.setdefault(latents, {})
    key = (a, b, unit)
    if key not in kept:
        result = latents.contrast(a, b or None, unit=unit)  # type: ignore[arg-type]
        while len(kept) >= KEPT:
            kept.pop(next(iter(kept)))
        kept[key] = result
    return kept[key]


def contrast_view(source: StoreSource, sae: str, *, a: str, b: str = "", unit: str = "auto", top: int = 50) -> dict[str, Any]:
    """The contrast as JSON: :meth:`Contrast.to_dict` with the ``top`` most significant rows."""
    bounded("top", top)
    return contrast_result(source, sae, a=a, b=b, unit=unit).to_dict(top=top)


def volcano(result: Contrast) -> ScatterChart:
    """The volcano plot of the most significant :data:`VOLCANO_POINTS` latents: log2 rate ratio
    (A over B) across, -log10 q up, significant ones (q < 0.05) coloured by side, each a link."""
    rows = result.frame.head(VOLCANO_POINTS)
    q = np.maximum(rows["q"].to_numpy(), 1e-300)
    effect = rows["log2_ratio"].to_numpy()
    labels = [f"latent {latent}: log2 ratio {e:.3g}, q {qq:.3g}" + (f" ({label})" if label else "")
              for latent, e, qq, label in zip(rows["latent"], effect, q, rows["label"], strict=True)]
    classes = ["ns" if qq >= SIGNIFICANT else ("up" if e > 0 else "down") for e, qq in zip(effect, q, strict=True)]
    return scatter_chart(f"log2 rate ratio (A over B) across, -log10 q up; {rows.height:,} most significant latents",
                         effect, -np.log10(q), labels=labels, keys=rows["latent"].to_list(), classes=classes,
                         y_line=-math.log10(SIGNIFICANT))
