"""Histograms as SVG geometry, computed on the server: the pages need no plotting library and
no script, and every number reaching the SVG is a float we made (labels go through the
template's escaping like any other text)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["Bar", "BarChart", "LineChart", "ScatterChart", "bar_chart", "line_chart", "rebin", "scatter_chart"]

WIDTH, HEIGHT, PAD = 480.0, 140.0, 4.0


@dataclass(frozen=True)
class Bar:
    """One bar: its box in SVG units, what it counts and the range it covers."""

    x: float
    y: float
    width: float
    height: float
    count: int
    label: str


@dataclass(frozen=True)
class BarChart:
    """A histogram ready to draw: bars, the axis labels at both ends, the tallest count."""

    title: str
    bars: list[Bar]
    left: str
    right: str
    peak: int
    width: float = WIDTH
    height: float = HEIGHT


def rebin(counts: ArrayLike, edges: ArrayLike, *, most: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge neighbouring bins so that at most ``most`` remain (``edges`` has one more entry)."""
    counts, edges = np.asarray(counts, np.int64), np.asarray(edges, np.float64)
    step = -(-counts.size // most)
    if step <= 1:
        return counts, edges
    pad = (-counts.size) % step
    merged = np.concatenate([counts, np.zeros(pad, np.int64)]).reshape(-1, step).sum(1)
    merged_edges = np.append(edges[:-1:step], edges[-1])
    return merged, merged_edges


def bar_chart(title: str, counts: ArrayLike, edges: ArrayLike, *, fmt: str = "{:.3g}", log_y: bool = False,
              trim: bool = True) -> BarChart:
    """Bars for ``counts`` on bins ``edges`` (len(counts) + 1). ``trim`` drops empty bins at both
    ends; ``log_y`` draws heights as log(1 + count), for distributions with a long tail."""
    counts, edges = np.asarray(counts, np.int64), np.asarray(edges, np.float64)
    if trim and counts.any():
        nz = np.flatnonzero(counts)
        counts, edges = counts[nz[0] : nz[-1] + 1], edges[nz[0] : nz[-1] + 2]
    scale = np.log1p(counts) if log_y else counts.astype(np.float64)
    top = float(scale.max()) if scale.size and scale.max() > 0 else 1.0
    slot = (WIDTH - 2 * PAD) / max(counts.size, 1)
    bars = []
    for i, (c, s) in enumerate(zip(counts.tolist(), scale.tolist(), strict=True)):
        h = (HEIGHT - 2 * PAD) * s / top
        bars.append(Bar(x=PAD + i * slot, y=HEIGHT - PAD - h, width=max(slot - 1, 0.5), height=h, count=int(c),
                        label=f"{fmt.format(edges[i])} to {fmt.format(edges[i + 1])}: {c:,}"))
    left = fmt.format(edges[0]) if edges.size else ""
    right = fmt.format(edges[-1]) if edges.size else ""
    return BarChart(title=title, bars=bars, left=left, right=right, peak=int(counts.max()) if counts.size else 0)


@dataclass(frozen=True)
class LineChart:
    """Points joined by a line, ready to draw: SVG coordinates, each with its tooltip label."""

    title: str
    points: list[tuple[float, float, str]]
    left: str
    right: str
    top: str
    width: float = WIDTH
    height: float = HEIGHT

    @property
    def path(self) -> str:
        """The SVG ``points`` attribute of the polyline."""
        return " ".join(f"{x:.2f},{y:.2f}" for x, y, _ in self.points)


def line_chart(title: str, xs: ArrayLike, ys: ArrayLike, *, fmt: str = "{:.3g}") -> LineChart:
    """A line through (xs, ys), x and y scaled to the box (y from 0, or from the lowest value
    when it is negative); used for the steering dose-response."""
    x, y = np.asarray(xs, np.float64), np.nan_to_num(np.asarray(ys, np.float64))
    x_lo, x_hi = (float(x.min()), float(x.max())) if x.size else (0.0, 1.0)
    y_lo, y_hi = (min(float(y.min()), 0.0), float(y.max())) if y.size else (0.0, 1.0)
    x_span, y_span = (x_hi - x_lo) or 1.0, (y_hi - y_lo) or 1.0
    points = [(PAD + (WIDTH - 2 * PAD) * (a - x_lo) / x_span, HEIGHT - PAD - (HEIGHT - 2 * PAD) * (b - y_lo) / y_span,
               f"{fmt.format(a)}: {fmt.format(b)}") for a, b in zip(x.tolist(), y.tolist(), strict=True)]
    return LineChart(title=title, points=points, left=fmt.format(x_lo), right=fmt.format(x_hi), top=fmt.format(y_hi))


@dataclass(frozen=True)
class ScatterChart:
    """Points ready to draw: SVG x, y, tooltip, a key the page links by (a latent id) and a CSS
    class each; ``x_zero``: the SVG x of the value 0 (None when outside the range); ``y_line``:
    the SVG y of a threshold (None: none)."""

    title: str
    points: list[tuple[float, float, str, int, str]]
    left: str
    right: str
    top: str
    x_zero: float | None
    y_line: float | None
    width: float = WIDTH
    height: float = 2 * HEIGHT


def scatter_chart(title: str, xs: ArrayLike, ys: ArrayLike, *, labels: list[str], keys: list[int], classes: list[str],
                  y_line: float | None = None, fmt: str = "{:.3g}") -> ScatterChart:
    """Points (xs, ys) scaled to the box, y from 0 up, x symmetric around 0 (a volcano plot's
    effect axis); non-finite values are drawn at the nearest edge."""
    x, y = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    reach = float(np.nanmax(np.abs(x[np.isfinite(x)]))) if np.isfinite(x).any() else 1.0
    reach = reach or 1.0
    y_hi = float(np.nanmax(y[np.isfinite(y)])) if np.isfinite(y).any() else 1.0
    y_hi = max(y_hi, y_line or 0.0, 1e-9)
    height = 2 * HEIGHT
    x = np.clip(np.nan_to_num(x, nan=0.0, posinf=reach, neginf=-reach), -reach, reach)
    y = np.clip(np.nan_to_num(y, nan=0.0, posinf=y_hi, neginf=0.0), 0.0, y_hi)
    sx = lambda v: PAD + (WIDTH - 2 * PAD) * (v + reach) / (2 * reach)  # noqa: E731
    sy = lambda v: height - PAD - (height - 2 * PAD) * v / y_hi  # noqa: E731
    points = [(sx(a), sy(b), label, int(key), cls)
              for a, b, label, key, cls in zip(x.tolist(), y.tolist(), labels, keys, classes, strict=True)]
    return ScatterChart(title=title, points=points, left=fmt.format(-reach), right=fmt.format(reach),
                        top=fmt.format(y_hi), x_zero=sx(0.0), y_line=None if y_line is None else sy(y_line), height=height)
