"""Export to Neuronpedia's bulk-import layout: gzipped JSONL of features and of activations.

``<out>/features/batch-0.jsonl.gz`` holds one record per latent (density, max, the histogram of
non-zero values); ``<out>/activations/batch-0.jsonl.gz`` one record per example window (top
examples, then equal-count quantile samples with their bin). Field names follow Neuronpedia's
``Feature`` and ``Activation`` tables.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from actstore.query.latents import SaeLatents

__all__ = ["ExportSummary", "export_neuronpedia"]


class ExportSummary(NamedTuple):
    features: Path
    activations: Path
    n_features: int
    n_activations: int


def export_neuronpedia(latents: SaeLatents, features: Sequence[int], out: str | Path, *, model_id: str, source_id: str,
                       k: int = 20, window: int = 32, quantile_bins: int = 5, per_bin: int = 2,
                       creator_id: str = "actstore") -> ExportSummary:
    """Write the export for ``features`` of one SAE; ``source_id`` is Neuronpedia's "layer"
    (e.g. ``12-gemmascope-res-16k``)."""
    from actstore.store.stats import HIST_EDGES

    out = Path(out)
    (out / "features").mkdir(parents=True, exist_ok=True)
    (out / "activations").mkdir(parents=True, exist_ok=True)
    density = latents.density()
    centers = np.concatenate([[HIST_EDGES[0] / 2], np.sqrt(HIST_EDGES[:-1] * HIST_EDGES[1:]), [HIST_EDGES[-1]]])
    feature_rows, activation_rows = [], []
    for latent in features:
        d = density.row(int(latent), named=True)
        feature_rows.append({
            "modelId": model_id, "layer": source_id, "index": str(latent), "creatorId": creator_id,
            "hookName": latents.info.site, "maxActApprox": float(d["max"]), "frac_nonzero": float(d["density"]),
            "freq_hist_data_bar_heights": [int(h) for h in d["hist"]], "freq_hist_data_bar_values": centers.tolist(),
        })
        examples: list[tuple[dict[str, Any], dict[str, Any]]] = [(row, {}) for row in latents.top_k(latent, k=k, window=window).iter_rows(named=True)]
        if d["count"]:
            examples += [(row, {"binMin": row["bin_min"], "binMax": row["bin_max"], "binContains": row["bin_count"]})
                         for row in latents.quantile_examples(latent, bins=quantile_bins, per_bin=per_bin,
                                                              window=window).iter_rows(named=True)]
        activation_rows += [_activation(row, extra, latent, model_id, source_id, creator_id) for row, extra in examples]
    summary = ExportSummary(out / "features/batch-0.jsonl.gz", out / "activations/batch-0.jsonl.gz",
                            len(feature_rows), len(activation_rows))
    for path, rows in ((summary.features, feature_rows), (summary.activations, activation_rows)):
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    return summary


def _activation(row: dict[str, Any], extra: dict[str, Any], latent: int, model_id: str, source_id: str,
                creator_id: str) -> dict[str, Any]:
    values = [float(v) for v in row["values"]]
    return {
        "id": f"{source_id}-{latent}-{row['ctx']}-{row['pos']}", "modelId": model_id, "layer": source_id,
        "index": str(latent), "creatorId": creator_id, "tokens": row["tokens"], "values": values,
        "maxValue": max(values, default=0.0), "minValue": min(values, default=0.0), "maxValueTokenIndex": int(np.argmax(values)) if values else row["focus"],
        "dataSource": "actstore", "dataIndex": f"doc {row['doc']} ctx {row['ctx']} pos {row['pos']}", **extra,
    }
