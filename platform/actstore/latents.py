"""``store.sae(name)``: an SAE's latents with everything a researcher asks of them.

:class:`Latents` is the query layer's :class:`~actstore.query.latents.SaeLatents` (index, codes,
statistics) plus the calls that need ``actstore.explain`` (labels, explanations, search). It
lives here, above both packages, so that ``query/`` never imports ``explain/`` (which reads
windows and tokens through ``query/``): imports point one way. Each method is a thin wrapper
over the module that implements it.

>>> import actstore
>>> latents = actstore.open("runs/demo").sae("topk-2048")  # doctest: +SKIP
>>> latents.label(1444, "the word future", author="ann")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from actstore.contrast.documents import Contrast, Unit, contrast_documents
from actstore.contrast.models import ModelContrast, contrast_models
from actstore.explain.profile import profile_text, token_profile
from actstore.explain.search import search_by_example, search_explanations
from actstore.explain.table import (
    PartCache,
    append_explanations,
    current_explanations,
    human_row,
    scan_explanations,
)
from actstore.query.across import across_layers, neighbours
from actstore.query.filters import Where
from actstore.query.latents import SaeLatents

if TYPE_CHECKING:
    from actstore.store.store import Store

__all__ = ["Latents"]


class Latents(SaeLatents):
    """The latents of one SAE in a store. Get it with ``store.sae(name)``."""

    def __init__(self, store: Store, name: str) -> None:
        super().__init__(store, name)
        self._explanations = PartCache()  # what explanations() has read of the table

    def label(self, latent: int, text: str, *, author: str) -> str:
        """Add a manual label of ``latent`` to the SAE's explanations table; returns its key.
        The latest label of a latent is its current explanation."""
        row = human_row(self._check_latent(latent), text, author=author)
        append_explanations(self.store, self.name, [row])
        return str(row["key"])

    def explanations(self, *, current: bool = False, latent: int | None = None) -> pl.DataFrame:
        """The explanations table (every label and automatic explanation with its scores), or with
        ``current=True`` one row per latent: its latest label, else its best-scored automatic
        explanation (the view a browser or an export shows). Each call lists the committed parts
        and reads only those it has not read before (parts never change)."""
        frame = scan_explanations(self.store, self.name, cache=self._explanations)
        if latent is not None:
            frame = frame.filter(pl.col("latent") == self._check_latent(latent))
        return current_explanations(frame) if current else frame.collect()

    def search(self, text: str, *, top: int = 20) -> pl.DataFrame:
        """Latents whose explanations match ``text`` (BM25): rank, latent, text, kind, author,
        match, score, density."""
        return search_explanations(self, text, top=top)

    def search_by_example(self, text: str, *, top: int = 20, where: Where | None = None) -> pl.DataFrame:
        """Latents firing where the stored corpus holds ``text`` (in the documents ``where``
        matches), ranked by how unusual their value is for them (percentile from the stored
        histograms), with their current label."""
        return search_by_example(self, text, top=top, where=self.select_documents(where))

    def contrast(self, a: Where, b: Where | None = None, *, unit: Unit = "auto", prior: float = 1.0,
                 level: float = 0.95) -> Contrast:
        """Which latents fire more in the documents ``a`` matches than in those ``b`` matches (all
        others by default), tested per document (per context when a side has few documents):
        rates, log2 rate ratio with a confidence interval, Mann-Whitney p and BH q per latent,
        with current labels. See :mod:`actstore.contrast.documents`."""
        labels = self.explanations(current=True).select("latent", pl.col("text").alias("label"))
        return contrast_documents(self, a, b, unit=unit, prior=prior, level=level, labels=labels)

    def contrast_models(self, a: str, b: str, *, where: Where | None = None, unit: Unit = "auto", level: float = 0.95,
                        sites: bool = True) -> ModelContrast:
        """Which latents change from model ``a`` to model ``b`` on the same stored tokens (tags:
        ``base`` is the store's own model), this SAE encoding both: rates and means in each,
        tokens firing in one only, each document's mean change tested by the Wilcoxon signed-rank
        test over documents, BH q per latent, with current labels; and how far every site both
        store moves. See :mod:`actstore.contrast.models`."""
        labels = self.explanations(current=True).select("latent", pl.col("text").alias("label"))
        return contrast_models(self.store, self.name, a, b, where=self.select_documents(where), unit=unit, level=level,
                               labels=labels, sites=sites)

    def token_profile(self, latent: int) -> pl.DataFrame:
        """The tokens (``kind`` token) and preceding-token bigrams (``kind`` bigram) ``latent``
        fires on most, exact, kept with the index: count, corpus (occurrences among the indexed
        tokens), precision, recall, mass_share (``actstore.explain.profile.PROFILE_SCHEMA``)."""
        return token_profile(self, latent)

    def profile_text(self, latent: int) -> str | None:
        """:meth:`token_profile` in words (e.g. ``the token " await"``): the ``kind: profile``
        explanation that ``actstore explain`` scores; None for a latent that never fires."""
        return profile_text(self, latent)

    def across_layers(self, latent: int, *, window: int | None = 2, top: int = 3,
                      max_rows: int | None = None) -> pl.DataFrame:
        """The latents of the store's other SAEs within ``window`` layers of this SAE's site (None:
        all) that carry ``latent`` on: per SAE its ``top`` by decoder cosine (SAEs of the same input
        width, files on this machine) and its ``top`` by co-firing Jaccard. Columns: sae, layer,
        site, latent, cosine (null where not comparable), jaccard, together, count
        (:mod:`actstore.query.across`; ``max_rows`` bounds the code rows co-firing reads)."""
        others = neighbours(self, [Latents(self.store, s.name) for s in self.store.meta.saes], window=window)
        return across_layers(self, self._check_latent(latent), saes=others, top=top, max_rows=max_rows).frame
