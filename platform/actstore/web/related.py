"""The latents a feature page links to, each with its current label: those co-firing with it
(exact, or on a stated sample of code chunks) and those with similar decoder directions."""

from __future__ import annotations

from typing import Any

import polars as pl

from actstore.errors import ConfigError, DecoderNotFoundError
from actstore.query.cofiring import cofiring_sample
from actstore.query.similar import similar_latents

__all__ = ["COFIRING_BYTES", "cofiring_panel", "labelled", "similar_panel"]

COFIRING_BYTES = 16 * 2**20  # latent ids a page's co-firing decodes at most: all of a demo-sized store


def labelled(current: pl.DataFrame, frame: pl.DataFrame, *, column: str = "latent") -> list[dict[str, Any]]:
    """``frame``'s rows with ``label``: the current explanation (from ``current``, what
    ``explanations(current=True)`` returns) of the latent in ``column``; null when it has none."""
    labels = current.select(pl.col("latent").alias(column), label=pl.col("text"))
    return frame.join(labels, on=column, how="left", maintain_order="left").to_dicts()


def cofiring_panel(latents: Any, latent: int, current: pl.DataFrame, *, top: int, budget: int = COFIRING_BYTES,
                   where: Any = None) -> dict[str, Any]:
    """Co-firing latents by Jaccard with labels (``current``: the current explanations), and what they were counted on: ``exact`` over
    all occurrences, or the occurrences in a seeded sample of whole code chunks (``counted`` of
    ``occurrences``, in ``contexts`` of ``contexts_total``), ``together`` scaled up to all.
    ``budget``: bytes of latent ids to decode at most (a code row is ``code_cap`` int32).
    ``where``: the latent's occurrences in those documents only (as ``cofiring(where=...)``)."""
    max_rows = budget // (4 * latents.info.code_cap)
    sample = cofiring_sample(latents, latents.all_postings(latent, where=where)[0], max_rows=max_rows)
    frame = latents.cofiring(latent, top=top, max_rows=max_rows, where=where)
    return {"rows": labelled(current, frame), "exact": sample.exact, "counted": int(sample.tokens.size),
            "occurrences": sample.occurrences, "contexts": sample.contexts, "contexts_total": sample.contexts_total}


def similar_panel(latents: Any, latent: int, current: pl.DataFrame, *, top: int) -> dict[str, Any]:
    """The ``top`` latents of the same SAE nearest by decoder cosine, with labels, or why none
    can be shown (the SAE's files are not on this machine)."""
    try:
        frame = similar_latents(latents.store, latents.name, latent, top=top)
    except (DecoderNotFoundError, ConfigError) as exc:
        return {"rows": [], "missing": str(exc)}
    return {"rows": labelled(current, frame.drop("sae")), "missing": None}
