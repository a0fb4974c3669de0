"""Contrast two document sets: which latents fire more often in A than in B, tested per document.

Tokens of one document are not independent (a latent firing on every token of one long
document would look hugely significant per token), so the unit of the test is the *document*:
each document's firing rate of each latent (tokens where it fires / the document's tokens). When
a side holds fewer than :data:`MIN_DOCUMENTS` documents the unit is the *context* instead (the
set's tokens in each context; a document spanning several contexts then counts several times,
which the output says). Per latent:

- the two-sided Mann-Whitney U test of A's per-unit rates against B's, Benjamini-Hochberg
  q-values over all latents of the SAE;
- the effect: log2 of A's rate over B's with a prior (``prior`` pseudo-events spread over both
  sides by tokens), with a confidence interval from the unit-clustered variance;
- rates, tokens fired, units fired and mean value where it fires, on each side.

Cost: one token-major read of each side's contexts (``ctx_len x code_cap`` code entries per
context), plus a sort of the non-zero (unit, latent) rates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl

from actstore.contrast.stats import (
    MIN_UNITS,
    bh_qvalues,
    log2_rate_ratio,
    rank_sum_test,
    rate_totals,
)
from actstore.errors import ConfigError
from actstore.query.filters import DocumentSet, Where
from actstore.query.scan import scan_codes

if TYPE_CHECKING:
    from actstore.query.latents import SaeLatents

__all__ = ["CONTRAST_SCHEMA", "MIN_DOCUMENTS", "Contrast", "ContrastSide", "Unit", "contrast_documents", "ranked_latents"]

MIN_DOCUMENTS = 10  # fewer documents on a side and the unit becomes the context
LATENT_CHUNK = 1024  # latents whose statistics are computed together (bounds memory)
Unit = Literal["auto", "document", "context"]
CONTRAST_SCHEMA = pl.Schema({
    "rank": pl.Int64(), "latent": pl.Int64(), "label": pl.String(),
    "rate_a": pl.Float64(), "rate_b": pl.Float64(), "count_a": pl.Int64(), "count_b": pl.Int64(),
    "units_a": pl.Int64(), "units_b": pl.Int64(), "mean_a": pl.Float64(), "mean_b": pl.Float64(),
    "log2_ratio": pl.Float64(), "ci_low": pl.Float64(), "ci_high": pl.Float64(), "auc": pl.Float64(),
    "p": pl.Float64(), "q": pl.Float64(),
})
"""Columns of a contrast: ``rate_x`` fraction of side X's tokens where the latent fires,
``count_x`` those tokens, ``units_x`` units where it fires, ``mean_x`` its mean value there,
``log2_ratio`` with its interval ``ci_low``..``ci_high``, ``auc`` the probability that a unit of A
has a higher rate than one of B (ties half), ``p`` the rank test's, ``q`` its BH q-value."""


@dataclass(frozen=True)
class ContrastSide:
    """One side as tested: its filter, documents, units and tokens read."""

    where: str
    documents: int
    units: int
    tokens: int


@dataclass(frozen=True)
class Contrast:
    """A contrast's result: ``frame`` (:data:`CONTRAST_SCHEMA`, every latent, most significant
    first), the sides, the ``unit`` of the test and why, and the test in words."""

    sae: str
    a: ContrastSide
    b: ContrastSide
    unit: Literal["document", "context"]
    why: str
    test: str
    frame: pl.DataFrame

    def to_dict(self, *, top: int | None = None) -> dict[str, Any]:
        """JSON-ready: everything, with the first ``top`` rows (all: None) under ``rows``."""
        frame = self.frame if top is None else self.frame.head(top)
        rows = frame.with_columns(pl.col(pl.Float64).fill_nan(None)).to_dicts()
        return {"sae": self.sae, "a": asdict(self.a), "b": asdict(self.b), "unit": self.unit, "why": self.why,
                "test": self.test, "latents": self.frame.height, "rows": rows}

    def render(self, *, top: int = 20) -> str:
        """The sides, the unit and test, then the first ``top`` rows as an aligned table."""
        from actstore.query.render import render_frame

        shown = self.frame.head(top).select(
            "rank", "latent", "rate_a", "rate_b", "log2_ratio", "ci_low", "ci_high", "units_a", "units_b", "q",
            pl.col("label").fill_null("").str.slice(0, 60))
        lines = [f"{name}  {side.where}: {side.documents:,} documents, {side.tokens:,} tokens, {side.units:,} units ({self.unit}s)"
                 for name, side in (("A", self.a), ("B", self.b))]
        lines += [
                  f"unit: {self.unit} ({self.why})", f"test: {self.test}", "", render_frame(shown)]
        return "\n".join(lines)


def contrast_documents(latents: SaeLatents, a: Where, b: Where | None = None, *, unit: Unit = "auto",
                       prior: float = 1.0, level: float = 0.95, labels: pl.DataFrame | None = None) -> Contrast:
    """Contrast the documents ``a`` matches with those ``b`` matches (default: all the others).

    ``a``/``b``: polars expressions or SQL WHERE clauses over ``store.documents()``. The sets
    must not share documents. ``unit``: ``auto`` (documents when each side holds at least
    :data:`MIN_DOCUMENTS`, else contexts), or either one forced. ``labels``: ``latent``, ``label``
    rows joined in. Refused before any read: an empty side, overlapping sides, fewer than two units."""
    if unit not in ("auto", "document", "context"):
        raise ConfigError(f"unit must be 'auto', 'document' or 'context', got {unit!r}")
    set_a = latents.select_documents(a)
    assert set_a is not None
    set_b = latents.select_documents(b) if b is not None else _complement(set_a)
    assert set_b is not None
    _check_sides(set_a, set_b)
    chosen, why = _unit(set_a, set_b, unit)
    d_sae = latents.info.d_sae
    side_a, side_b = (_unit_counts(latents, s, chosen) for s in (set_a, set_b))
    units_a, units_b = side_a[0].exposure, side_b[0].exposure
    for name, units in (("A", units_a), ("B", units_b)):
        if units.size < 2:
            raise ConfigError(f"side {name} has {units.size} {chosen}s with committed codes; a test needs at least two")
    if min(units_a.size, units_b.size) < MIN_UNITS:
        why += f"; fewer than {MIN_UNITS} units on a side: p-values are rough"
    frame = ranked_latents(_frame(side_a, side_b, d_sae, prior=prior, level=level), labels, CONTRAST_SCHEMA)
    test = (f"two-sided Mann-Whitney U on per-{chosen} firing rates (normal approximation, tie- and continuity-"
            f"corrected); q: Benjamini-Hochberg over all {d_sae:,} latents; effect: log2 rate ratio with a prior of "
            f"{prior:g} pseudo-event{'' if prior == 1 else 's'}, {level:.0%} interval from the {chosen}-clustered variance")
    sides = [ContrastSide(s.where, int(s.docs.size), int(units.size), int(units.sum()))
             for s, units in ((set_a, units_a), (set_b, units_b))]
    return Contrast(latents.name, sides[0], sides[1], chosen, why, test, frame)


def ranked_latents(frame: pl.DataFrame, labels: pl.DataFrame | None, schema: pl.Schema) -> pl.DataFrame:
    """A contrast's per-latent ``frame`` (with ``p`` and ``abs``, the effect's size) with the
    current ``labels`` joined in, most significant first (then larger effects), ``rank`` from 0,
    as ``schema``."""
    if labels is not None:
        frame = frame.drop("label").join(labels.select("latent", "label"), on="latent", how="left")
    return frame.sort(["p", "abs", "latent"], descending=[False, True, False]).with_columns(
        rank=pl.int_range(pl.len(), dtype=pl.Int64)).select(list(schema)).cast(schema)


def _complement(docs: DocumentSet) -> DocumentSet:
    """Every stored document not in ``docs``."""
    rest = np.setdiff1d(np.arange(docs.layout.plan.doc_len.size), docs.docs)
    return DocumentSet(f"NOT ({docs.where})", rest, int(docs.layout.plan.stream_len[rest].sum()), docs.layout)


def _check_sides(a: DocumentSet, b: DocumentSet) -> None:
    for name, side in (("A", a), ("B", b)):
        if side.docs.size == 0:
            raise ConfigError(f"side {name} ({side.where}) matches no documents")
    shared = np.intersect1d(a.docs, b.docs)
    if shared.size:
        raise ConfigError(f"sides A ({a.where}) and B ({b.where}) share {shared.size} documents (e.g. {shared[:5].tolist()}); "
                          "a two-sample test needs disjoint sets (leave B out to contrast A with all other documents)")


def _unit(a: DocumentSet, b: DocumentSet, unit: Unit) -> tuple[Literal["document", "context"], str]:
    """The unit of the test and why it was chosen."""
    fewest = min(a.docs.size, b.docs.size)
    if unit == "document":
        return "document", "asked for"
    if unit == "context":
        return "context", "asked for; a document spanning several contexts counts several times"
    if fewest >= MIN_DOCUMENTS:
        return "document", f"each side holds at least {MIN_DOCUMENTS} documents"
    side = "A" if a.docs.size == fewest else "B"
    return "context", (f"side {side} holds {fewest} documents, fewer than {MIN_DOCUMENTS}: the set's tokens in each "
                       "context are the units, and a document spanning several contexts counts several times")


@dataclass(frozen=True)
class _UnitCounts:
    """One side, sparse, for latents ``first .. first + width``: ``count`` firing tokens and ``total``
    of values of ``latent`` (relative to ``first``) in unit ``unit`` (only pairs where it fires),
    and each unit's ``exposure`` (tokens)."""

    first: int
    width: int
    latent: np.ndarray
    unit: np.ndarray
    count: np.ndarray
    total: np.ndarray
    exposure: np.ndarray


def _unit_counts(latents: SaeLatents, docs: DocumentSet, unit: str) -> list[_UnitCounts]:
    """Per unit and latent, the firing tokens and their values' sum, from one scan of the set's
    codes, in chunks of :data:`LATENT_CHUNK` latents (a chunk's statistics are computed apart,
    which bounds memory: 10M tokens of a 16k-latent SAE hold ~10^8 (document, latent) pairs). A
    document running on into the next block of the scan is held back and finished with it."""
    d_sae = latents.info.d_sae
    n_units = docs.docs.size if unit == "document" else docs.contexts.size
    exposure = np.zeros(n_units, np.int64)
    parts: list[list[tuple[np.ndarray, ...]]] = [[] for _ in range(-(-d_sae // LATENT_CHUNK))]
    held = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))
    for block in scan_codes(latents.store, latents.name, docs):
        if block.val is None or block.doc.size == 0:
            continue
        uid = np.searchsorted(docs.docs, block.doc) if unit == "document" else np.searchsorted(docs.contexts, block.ctx)
        exposure += np.bincount(uid, minlength=n_units)
        on = block.idx >= 0
        ids = np.concatenate([held[0], np.broadcast_to(uid[:, None], on.shape)[on]])
        lat = np.concatenate([held[1], block.idx[on].astype(np.int64)])
        val = np.concatenate([held[2], block.val[on].astype(np.float64)])
        last = ids == uid[-1]  # the block's last unit may go on in the next block
        held = (ids[last], lat[last], val[last])
        _by_chunk(parts, _aggregate(ids[~last], lat[~last], val[~last], d_sae))
    _by_chunk(parts, _aggregate(*held, d_sae))
    present = exposure > 0  # units whose codes are not committed yet drop out
    renumber = np.cumsum(present) - 1
    out = []
    for c, chunk in enumerate(parts):
        ids, lat, count, total = (np.concatenate([p[i] for p in chunk]) if chunk else np.zeros(0) for i in range(4))
        out.append(_UnitCounts(c * LATENT_CHUNK, min(LATENT_CHUNK, d_sae - c * LATENT_CHUNK), lat.astype(np.int64),
                               renumber[ids.astype(np.int64)], count.astype(np.float64), total.astype(np.float64),
                               exposure[present]))
    return out


def _by_chunk(parts: list[list[tuple[np.ndarray, ...]]], pairs: tuple[np.ndarray, ...]) -> None:
    """Append (unit, latent, count, total) pairs to their latent chunk's list, compactly (int32, float32)."""
    ids, lat, count, total = pairs
    which = lat // LATENT_CHUNK
    order = np.argsort(which, kind="stable")
    bounds = np.searchsorted(which[order], np.arange(len(parts) + 1))
    for c in np.flatnonzero(np.diff(bounds)):
        at = order[bounds[c] : bounds[c + 1]]
        parts[c].append((ids[at].astype(np.int32), (lat[at] - c * LATENT_CHUNK).astype(np.int32),
                         count[at].astype(np.float32), total[at].astype(np.float32)))


def _aggregate(ids: np.ndarray, lat: np.ndarray, val: np.ndarray, d_sae: int) -> tuple[np.ndarray, ...]:
    """(unit, latent, count, sum of values) per (unit, latent) pair among firing entries."""
    if ids.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(0, np.float64)
    low = int(ids.min())
    key = (ids - low) * d_sae + lat
    span = (int(ids.max()) - low + 1) * d_sae
    if span <= 4 * key.size + 65536:  # few units: dense counting beats a sort
        count = np.bincount(key, minlength=span)
        pairs = np.flatnonzero(count)
        total = np.bincount(key, weights=val, minlength=span)[pairs]
        count = count[pairs]
    else:
        pairs, inverse, count = np.unique(key, return_inverse=True, return_counts=True)
        total = np.bincount(inverse, weights=val)
    return pairs // d_sae + low, pairs % d_sae, count.astype(np.float64), total


def _frame(a: list[_UnitCounts], b: list[_UnitCounts], d_sae: int, *, prior: float, level: float) -> pl.DataFrame:
    """Every latent's statistics (unranked, ``abs``: |log2 ratio| for the ranking), chunk by chunk."""
    frames = [_chunk_frame(x, y, prior=prior, level=level) for x, y in zip(a, b, strict=True)]
    frame = pl.concat(frames)
    return frame.with_columns(q=pl.Series(bh_qvalues(frame["p"].to_numpy())))


def _chunk_frame(a: _UnitCounts, b: _UnitCounts, *, prior: float, level: float) -> pl.DataFrame:
    width = a.width
    rates = [s.count / s.exposure[s.unit] for s in (a, b)]
    test = rank_sum_test(a.latent, rates[0], a.exposure.size, b.latent, rates[1], b.exposure.size, n_latents=width)
    totals = [rate_totals(s.latent, s.unit, s.count, s.exposure, n_latents=width) for s in (a, b)]
    effect = log2_rate_ratio(totals[0], totals[1], prior=prior, level=level)
    columns: dict[str, Sequence[Any] | np.ndarray] = {"latent": np.arange(a.first, a.first + width), "label": [None] * width}
    for name, side, total in (("a", a, totals[0]), ("b", b, totals[1])):
        fired = total.events
        columns[f"rate_{name}"] = fired / side.exposure.sum()
        columns[f"count_{name}"] = fired.astype(np.int64)
        columns[f"units_{name}"] = np.bincount(side.latent, minlength=width)
        columns[f"mean_{name}"] = np.where(fired > 0, np.bincount(side.latent, weights=side.total, minlength=width)
                                           / np.maximum(fired, 1), np.nan)
    columns |= {"log2_ratio": effect.estimate, "ci_low": effect.low, "ci_high": effect.high, "auc": test.effect,
                "p": test.p, "abs": np.abs(effect.estimate)}
    return pl.DataFrame(columns, schema_overrides={"label": pl.String()})
