"""A feature across layers: from one latent, the latents of the store's other SAEs that carry the
same thing, so a researcher follows a concept through the network (a whole Gemma Scope release
has an SAE on every layer and sub-layer).

For each other SAE (by default those whose site lies within ``window`` layers of this one's):
- **decoder cosine** (:func:`actstore.query.similar.decoder_rows` and ``nearest_rows``): only
  between SAEs that write to the same space, i.e. of the same input width (res and mlp SAEs both
  read d_model-wide sites; attention ``hook_z`` SAEs only compare among themselves). It needs each
  SAE's files on this machine; where they are not, the cosine is null and ``missing`` says why.
- **co-firing**: the Jaccard of the latent's occurrences (from its SAE's index) with each latent
  of the other SAE, from the other SAE's token-major codes at this latent's tokens and its
  statistics' counts (no index of the other SAE is needed; counted like ``SaeLatents.cofiring``, on
  a stated sample of code chunks past ``max_rows``: :func:`actstore.query.cofiring.cofiring_sample`).
Each other SAE contributes its ``top`` latents by each measure; a row carries both measures.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import polars as pl

from actstore.errors import ConfigError, DecoderNotFoundError
from actstore.models.sites import parse_site
from actstore.query.cofiring import cofiring_sample
from actstore.query.similar import decoder_rows, nearest_rows

__all__ = ["ACROSS_SCHEMA", "Across", "across_layers", "cofiring_with", "neighbours"]

ACROSS_SCHEMA = pl.Schema({"sae": pl.String(), "layer": pl.Int64(), "site": pl.String(), "latent": pl.Int64(),
                           "cosine": pl.Float32(), "jaccard": pl.Float64(), "together": pl.Int64(), "count": pl.Int64()})


class Across(NamedTuple):
    """The latents of the other SAEs (:data:`ACROSS_SCHEMA`, by layer, site and measure) and, per
    SAE whose decoder could not be compared, why (``missing``)."""

    frame: pl.DataFrame
    missing: dict[str, str]


def _together(latents: Any, latent: int, other: Any, *, max_rows: int | None, block: int = 4096) -> tuple[np.ndarray, int]:
    """Per latent of ``other``: on how many of ``latent``'s tokens it fires (scaled up when counted
    on a sample), and ``latent``'s occurrences."""
    sample = cofiring_sample(latents, latents.all_postings(latent)[0], max_rows=max_rows)
    together = np.zeros(other.info.d_sae, np.int64)
    for i in range(0, sample.tokens.size, block):
        idx = other._codes_at(sample.tokens[i : i + block])  # the other SAE's latent ids at these tokens
        together += np.bincount(idx[idx >= 0], minlength=other.info.d_sae)
    if not sample.exact:
        together = np.rint(together * (sample.occurrences / max(sample.tokens.size, 1))).astype(np.int64)
    return together, sample.occurrences


def _counts(other: Any) -> np.ndarray:
    """Occurrences of every latent of ``other`` from its statistics: no index of it is needed."""
    return other.density()["count"].to_numpy()


def cofiring_with(latents: Any, latent: int, other: Any, *, max_rows: int | None = None) -> pl.DataFrame:
    """Latents of ``other`` (another SAE of the same store) firing on ``latent``'s tokens, by
    Jaccard: latent, together (|A and B|), count (|B|, from its statistics), jaccard (|A and B| /
    |A or B|). ``latent``'s SAE needs its index; ``other`` only its codes and statistics."""
    together, occurrences = _together(latents, latent, other, max_rows=max_rows)
    counts = _counts(other)
    frame = pl.DataFrame({"latent": np.arange(other.info.d_sae), "together": together, "count": counts,
                          "jaccard": together / np.maximum(occurrences + counts - together, 1)})
    return frame.filter(pl.col("together") > 0).sort(["jaccard", "together", "latent"], descending=[True, True, False])


def across_layers(latents: Any, latent: int, *, saes: list[Any], top: int = 3, max_rows: int | None = None) -> Across:
    """The ``top`` latents of each SAE in ``saes`` (other SAEs' latents objects of the same store,
    kept in that order) by decoder cosine and by co-firing Jaccard with ``latent`` (see the module
    docstring), each SAE's rows by cosine, then Jaccard."""
    if top < 1:
        raise ConfigError(f"top must be >= 1, got {top}")
    mine: np.ndarray | None = None
    missing: dict[str, str] = {}
    frames = []
    for other in saes:
        together, occurrences = _together(latents, latent, other, max_rows=max_rows)
        counts = _counts(other)
        jaccard = together / np.maximum(occurrences + counts - together, 1)
        fired = np.flatnonzero(together)
        picked = set(fired[np.lexsort((fired, -jaccard[fired]))][:top].tolist())
        cosine = None
        if other.info.d_in != latents.info.d_in:
            missing[other.name] = f"reads a site {other.info.d_in} wide, not {latents.info.d_in}: no decoder cosine"
        else:
            try:
                mine = decoder_rows(latents.store, latents.name)[latent] if mine is None else mine
                rows = decoder_rows(latents.store, other.name)
                picked |= set(nearest_rows(mine, rows, top=top)[0].tolist())
                cosine = rows[sorted(picked)] @ (mine / max(float(np.linalg.norm(mine)), 1e-12))
            except DecoderNotFoundError as exc:
                missing[other.name] = str(exc)
        ids = np.array(sorted(picked), np.int64)
        frames.append(pl.DataFrame({
            "sae": [other.name] * ids.size, "layer": [parse_site(other.info.site).layer] * ids.size,
            "site": [other.info.site] * ids.size, "latent": ids,
            "cosine": cosine if cosine is not None else [None] * ids.size, "jaccard": jaccard[ids],
            "together": together[ids], "count": counts[ids]}, schema=ACROSS_SCHEMA).sort(
                ["cosine", "jaccard", "latent"], descending=[True, True, False], nulls_last=True))
    return Across(pl.concat(frames) if frames else pl.DataFrame(schema=ACROSS_SCHEMA), missing)


def neighbours(latents: Any, others: list[Any], *, window: int | None) -> list[Any]:
    """The SAEs of ``others`` (all of a store's but ``latents``' own) whose site lies within ``window``
    layers of ``latents``' (None: all), ordered by layer and by where the site sits in a block."""
    here = parse_site(latents.info.site)
    chosen = [o for o in others if o.name != latents.name
              and (window is None or abs(parse_site(o.info.site).layer - here.layer) <= window)]
    return sorted(chosen, key=lambda o: parse_site(o.info.site))
