"""Features on a text: per token, the top latents across SAEs, with each value's percentile in
the latent's corpus distribution (from the store's histograms) and the latent's density."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import numpy as np
import polars as pl

from actstore.errors import ConfigError
from actstore.query.latents import SaeLatents
from actstore.store.stats import HIST_EDGES

__all__ = ["FEATURES_SCHEMA", "LatentStats", "rank_features", "with_labels"]

FEATURES_SCHEMA = pl.Schema({
    "pos": pl.Int32(), "token_id": pl.Int32(), "token": pl.String(), "special": pl.Boolean(), "rank": pl.Int32(),
    "sae": pl.String(), "latent": pl.Int64(), "value": pl.Float32(), "percentile": pl.Float64(), "density": pl.Float64(),
    "label": pl.String(),
})


class LatentStats(NamedTuple):
    """One SAE's corpus statistics, read once per session."""

    density: np.ndarray  # [d_sae] fraction of counted tokens where the latent fires
    max: np.ndarray  # [d_sae] largest value seen
    cum_hist: np.ndarray  # [d_sae, bins] cumulative counts of non-zero values over HIST_EDGES bins

    @classmethod
    def of(cls, latents: SaeLatents) -> LatentStats:
        frame = latents.density()
        hist = np.asarray(frame["hist"].to_list(), dtype=np.int64).reshape(len(frame), -1)
        return cls(frame["density"].to_numpy(), frame["max"].to_numpy(), np.cumsum(hist, axis=1))

    def percentile(self, latents: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Percent of the latent's corpus occurrences below each value: the occurrences in lower
        histogram bins plus half of those in the value's own bin (mid-rank; bins are 8 per
        decade, so this is as fine as the histogram). NaN for a latent the corpus never fired."""
        b = np.searchsorted(HIST_EDGES, values, side="right")
        cum = self.cum_hist[latents]
        rows = np.arange(latents.size)
        at = cum[rows, b] - np.where(b > 0, cum[rows, np.maximum(b - 1, 0)], 0)
        total = cum[:, -1].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, 100.0 * (cum[rows, b] - at + 0.5 * at) / total, np.nan)


def rank_features(ids: list[int], tokens: list[str], special: np.ndarray, dense: dict[str, np.ndarray],
                  stats: dict[str, LatentStats], *, top: int, rank: Literal["value", "percentile"],
                  max_density: float | None, include_special: bool) -> pl.DataFrame:
    """The ``top`` latents of each token across the SAEs of ``dense`` ({sae: [T, d_sae]})."""
    if rank not in ("value", "percentile"):
        raise ConfigError(f"rank must be 'value' or 'percentile', got {rank!r}")
    if top < 1:
        raise ConfigError(f"top must be >= 1, got {top}")
    parts = []
    for sae, f in dense.items():
        pos, latent = np.nonzero(f)
        values = f[pos, latent]
        st = stats[sae]
        parts.append(pl.DataFrame({
            "pos": pos.astype(np.int32), "sae": [sae] * pos.size, "latent": latent.astype(np.int64),
            "value": values.astype(np.float32), "percentile": st.percentile(latent, values), "density": st.density[latent],
        }))
    frame = pl.concat(parts).with_columns(pl.col("percentile").fill_nan(None))
    if max_density is not None:
        frame = frame.filter(pl.col("density") <= max_density)
    tok = pl.DataFrame({"pos": np.arange(len(ids), dtype=np.int32), "token_id": np.asarray(ids, np.int32),
                        "token": tokens, "special": special})
    frame = frame.join(tok, on="pos", how="left")
    if not include_special:
        frame = frame.filter(~pl.col("special"))
    key = [rank, "value"] if rank == "percentile" else ["value"]
    frame = frame.sort(["pos", *key, "sae", "latent"], descending=[False, *[True] * len(key), False, False],
                       nulls_last=True)
    frame = frame.with_columns(rank=pl.int_range(pl.len(), dtype=pl.Int32).over("pos")).filter(pl.col("rank") < top)
    return frame.with_columns(label=pl.lit(None, dtype=pl.String)).select(list(FEATURES_SCHEMA)).cast(FEATURES_SCHEMA)


def with_labels(frame: pl.DataFrame, latents: dict[str, Any]) -> pl.DataFrame:
    """``frame`` (:data:`FEATURES_SCHEMA`) with ``label`` set to each latent's current
    explanation (``latents[sae].explanations(current=True)``, read now: a label added while a
    session runs shows at once); null where it has none."""
    current = [sae.explanations(current=True).select("latent", label="text").with_columns(sae=pl.lit(name))
               for name, sae in latents.items()]
    labels = pl.concat(current).cast({"latent": pl.Int64, "label": pl.String}) if current else None
    if labels is None or labels.is_empty():
        return frame
    return frame.drop("label").join(labels, on=["sae", "latent"], how="left", maintain_order="left").select(
        list(FEATURES_SCHEMA)).cast(FEATURES_SCHEMA)
