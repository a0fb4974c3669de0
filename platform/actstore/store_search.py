"""Finding latents in every SAE of a store at once (``store.search``, ``actstore search STORE TEXT``
without ``--sae``): a whole Gemma Scope release is dozens of SAEs, and a researcher asks "which
latents anywhere are about X".

By explanations, one BM25 index spans the explanations of every SAE, so match scores compare
across SAEs (an index per SAE would weigh the same word differently in each). By example, each
SAE's :func:`~actstore.explain.search.search_by_example` ranks its latents by evidence (from
percentiles of their values within their own distributions), which compares across SAEs as it
is; it runs once per SAE (each finds the text's places in the corpus again). Both cover labels,
explanations and every latent's token profile.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from actstore.errors import ConfigError
from actstore.explain.search import (
    EXAMPLE_SEARCH_SCHEMA,
    SEARCH_SCHEMA,
    WORD,
    _bm25,
    searchable_rows,
)
from actstore.latents import Latents

if TYPE_CHECKING:
    from actstore.store.store import Store

__all__ = ["STORE_EXAMPLE_SCHEMA", "STORE_SEARCH_SCHEMA", "search_store"]

STORE_SEARCH_SCHEMA = pl.Schema({"sae": pl.String(), **SEARCH_SCHEMA})
STORE_EXAMPLE_SCHEMA = pl.Schema({"sae": pl.String(), **EXAMPLE_SEARCH_SCHEMA})
ALL_SAES = "\0all"  # the cache key of the store-wide BM25 index (no SAE can be named so)


def search_store(store: Store, text: str, *, top: int = 20, by_example: bool = False,
                 saes: list[str] | None = None) -> pl.DataFrame:
    """Latents of every SAE of ``store`` (or of ``saes``) found by ``text``, ranked in one list:
    by their explanations' words (BM25 ``match``; columns :data:`STORE_SEARCH_SCHEMA`), or with
    ``by_example`` by their evidence where the corpus holds the text (columns
    :data:`STORE_EXAMPLE_SCHEMA`). ``rank`` counts over the whole list."""
    if top < 1:
        raise ConfigError(f"top must be >= 1, got {top}")
    names = saes if saes is not None else [s.name for s in store.meta.saes]
    for name in names:
        Latents(store, name)  # an unknown SAE fails here, by name
    if by_example:
        found = [Latents(store, n).search_by_example(text, top=top).with_columns(sae=pl.lit(n)) for n in names]
        ranked = pl.concat(found, how="vertical").sort(["evidence", "percentile", "sae", "latent"],
                                                       descending=[True, True, False, False]).head(top) if found else None
        return _ranked(ranked, STORE_EXAMPLE_SCHEMA)
    return _ranked(_by_explanations(store, names, text, top), STORE_SEARCH_SCHEMA)


def _by_explanations(store: Store, names: list[str], text: str, top: int) -> pl.DataFrame | None:
    import bm25s

    parts = [searchable_rows(Latents(store, n)).with_columns(sae=pl.lit(n)) for n in names]
    rows = pl.concat([p for p in parts if p.height], how="vertical") if any(p.height for p in parts) else None
    words = bm25s.tokenize([text], stopwords="en", token_pattern=WORD, return_ids=False, show_progress=False)
    if rows is None or not words or not words[0]:
        return None
    index = _bm25(SimpleNamespace(store=store, name=ALL_SAES), rows)
    found, match = index.retrieve(words, k=rows.height, show_progress=False)
    hits = pl.DataFrame({"row": found[0].astype(np.int64), "match": match[0].astype(np.float64)}).filter(pl.col("match") > 0)
    best = (hits.join(rows.with_row_index("row").with_columns(pl.col("row").cast(pl.Int64)), on="row")
            .sort(["match", "created"], descending=True, nulls_last=True).unique(["sae", "latent"], keep="first", maintain_order=True).head(top))
    density = [Latents(store, n).density().filter(pl.col("latent").is_in(group["latent"].implode()))
               .select("latent", "density").with_columns(sae=pl.lit(n))
               for (n,), group in best.group_by("sae", maintain_order=True)]
    return best.join(pl.concat(density), on=["sae", "latent"], how="left") if density else best


def _ranked(frame: pl.DataFrame | None, schema: pl.Schema) -> pl.DataFrame:
    if frame is None or frame.is_empty():
        return pl.DataFrame(schema=schema)
    return frame.with_columns(rank=pl.int_range(pl.len(), dtype=pl.Int64)).select(list(schema)).cast(schema)
