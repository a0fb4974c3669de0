"""Contrasting two document sets in every SAE of a store at once (``store.contrast``, ``actstore
contrast STORE --a WHERE`` without ``--sae``): a Gemma Scope release is dozens of SAEs, and "what
fires more in these documents" is asked of all of them.

Each SAE is contrasted as :func:`~actstore.contrast.documents.contrast_documents` does (same
sides, same unit, its own labels); the q-values are then Benjamini-Hochberg over every latent of
every SAE, the family actually tested, so a store-wide list is no more optimistic than one
SAE's. Rows are ranked by p over the whole list.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import polars as pl

from actstore.contrast.documents import CONTRAST_SCHEMA, Contrast, Unit
from actstore.contrast.stats import bh_qvalues
from actstore.errors import ConfigError
from actstore.latents import Latents
from actstore.query.filters import Where

if TYPE_CHECKING:
    from actstore.store.store import Store

__all__ = ["STORE_CONTRAST_SCHEMA", "StoreContrast", "contrast_store"]

STORE_CONTRAST_SCHEMA = pl.Schema({"sae": pl.String(), **CONTRAST_SCHEMA})


@dataclass(frozen=True)
class StoreContrast:
    """``frame`` (:data:`STORE_CONTRAST_SCHEMA`: every latent of every SAE, most significant
    first, q over all of them) and each SAE's own :class:`Contrast` (its q over its latents)."""

    contrasts: tuple[Contrast, ...]
    frame: pl.DataFrame

    @property
    def test(self) -> str:
        first = self.contrasts[0]
        return (first.test.replace(f"over all {first.frame.height:,} latents",
                                   f"over all {self.frame.height:,} latents of {len(self.contrasts)} SAEs"))

    def to_dict(self, *, top: int | None = None) -> dict[str, Any]:
        """JSON-ready: the sides, unit and test, and the first ``top`` rows (all: None) under ``rows``."""
        first = self.contrasts[0]
        frame = self.frame if top is None else self.frame.head(top)
        return {"saes": [c.sae for c in self.contrasts], "a": asdict(first.a), "b": asdict(first.b), "unit": first.unit,
                "why": first.why, "test": self.test, "latents": self.frame.height,
                "rows": frame.with_columns(pl.col(pl.Float64).fill_nan(None)).to_dicts()}

    def render(self, *, top: int = 20) -> str:
        """The sides, unit and test, then the first ``top`` rows with their SAE."""
        from actstore.query.render import render_frame

        first = self.contrasts[0]
        lines = [f"{name}  {side.where}: {side.documents:,} documents, {side.tokens:,} tokens, {side.units:,} units "
                 f"({first.unit}s)" for name, side in (("A", first.a), ("B", first.b))]
        shown = self.frame.head(top).select(
            "rank", "sae", "latent", "rate_a", "rate_b", "log2_ratio", "ci_low", "ci_high", "q",
            pl.col("label").fill_null("").str.slice(0, 50))
        return "\n".join([*lines, f"unit: {first.unit} ({first.why})", f"test: {self.test}", "", render_frame(shown)])


def contrast_store(store: Store, a: Where, b: Where | None = None, *, saes: list[str] | None = None,
                   unit: Unit = "auto", prior: float = 1.0, level: float = 0.95) -> StoreContrast:
    """Contrast the documents ``a`` matches with those ``b`` matches (default: all the others) in
    every SAE of ``store`` (or ``saes``), as one list ranked by p with q over all their latents."""
    names = saes if saes is not None else [s.name for s in store.meta.saes]
    if not names:
        raise ConfigError(f"the store at {store.location.url!r} has no SAEs to contrast")
    found = tuple(Latents(store, n).contrast(a, b, unit=unit, prior=prior, level=level) for n in names)
    frame = pl.concat([c.frame.with_columns(sae=pl.lit(c.sae)) for c in found], how="vertical")
    frame = (frame.with_columns(q=pl.Series(bh_qvalues(frame["p"].to_numpy())))
             .sort([pl.col("p"), pl.col("log2_ratio").abs(), pl.col("sae"), pl.col("latent")],
                   descending=[False, True, False, False], nulls_last=True)
             .with_columns(rank=pl.int_range(pl.len(), dtype=pl.Int64))
             .select(list(STORE_CONTRAST_SCHEMA)).cast(STORE_CONTRAST_SCHEMA))
    return StoreContrast(found, frame)
