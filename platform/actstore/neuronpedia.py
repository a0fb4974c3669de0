"""Export to Neuronpedia's bulk-import layout, as its importer reads it (rules and their source
in ``docs/neuronpedia.md``).

``<out>/<model_id>/<source_id>/`` holds ``model.jsonl``, ``sourceset.jsonl`` and ``source.jsonl``
(the rows the features' foreign keys need), ``features/batch-0.jsonl.gz`` (table ``Neuron``),
``activations/batch-0.jsonl.gz`` (``Activation``: top examples, then equal-width interval
samples) and, when given explanations, ``explanations/batch-0.jsonl.gz`` (``Explanation``).
The importer takes each file's columns from the keys of its first line, so every line of a
file carries the same keys.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import polars as pl

from actstore.errors import ConfigError
from actstore.explain.table import SCORERS

if TYPE_CHECKING:
    from actstore.latents import Latents
    from actstore.query.filters import Where

__all__ = ["DEFAULT_CREATOR_ID", "EXPLANATION_COLUMNS", "ExportSummary", "explanation_rows", "export_neuronpedia",
           "stored_explanations"]

# The user Neuronpedia's own seed creates (apps/webapp/prisma/seed.ts) and its webapp's
# DEFAULT_CREATOR_USER_ID (lib/env.ts): it exists in every local Neuronpedia database.
DEFAULT_CREATOR_ID = "clkht01d40000jv08hvalcvly"
EXPLANATION_COLUMNS = ("latent", "text", "kind", "author", "scores")
_MODEL_ID = re.compile(r"[a-z0-9_-]{1,128}")
_SOURCE_ID = re.compile(r"(?P<layer>\d+)-(?P<set>[A-Za-z0-9_-]+)")


class ExportSummary(NamedTuple):
    """Where the export went and how many rows each table file holds."""

    folder: Path
    rows: dict[str, int]


def export_neuronpedia(latents: Latents, features: Sequence[int], out: str | Path, *, model_id: str, source_id: str,
                       creator_id: str = DEFAULT_CREATOR_ID, k: int = 20, window: int = 32, quantile_bins: int = 5,
                       per_bin: int = 2, hist_bins: int = 50, explanations: pl.DataFrame | None = None,
                       where: Where | None = None) -> ExportSummary:
    """Write the export of ``features`` of one SAE. ``source_id`` is Neuronpedia's
    ``<layer>-<source set>`` (e.g. ``12-gemmascope-res-16k``); ``creator_id`` must be an existing
    Neuronpedia user id. ``explanations``: rows of :data:`EXPLANATION_COLUMNS` (see
    :func:`explanation_rows`); by default the store's own labels and explanations of ``features``.
    ``where``: a document filter; examples, densities and histograms then come from the
    matching documents only."""
    match = _SOURCE_ID.fullmatch(source_id)
    if not _MODEL_ID.fullmatch(model_id) or match is None:
        raise ConfigError(f"Neuronpedia ids: the model id must be lower-case letters, digits, '-' or '_' (got {model_id!r}) "
                          f"and the source id '<layer>-<source set>', e.g. 12-gemmascope-res-16k (got {source_id!r})")
    set_name = match["set"]
    folder = Path(out) / model_id / source_id
    key = {"modelId": model_id, "layer": source_id, "creatorId": creator_id}
    where = latents.select_documents(where)  # resolved once, before anything is written
    density = latents.density(where=where)
    neurons, activations = [], []
    for latent in features:
        d = density.row(int(latent), named=True)
        neurons.append({**key, "index": str(latent), "sourceSetName": set_name, "hookName": latents.info.site,
                        "maxActApprox": float(d["max"]), "frac_nonzero": float(d["density"]),
                        **_frequency_histogram(latents, int(latent), hist_bins, where)})
        activations += _activations(latents, int(latent), key, float(d["max"]), int(d["count"]), k=k, window=window,
                                    bins=quantile_bins, per_bin=per_bin, where=where)
    tables = {
        "model.jsonl": [_model(latents, model_id, creator_id)],
        "sourceset.jsonl": [{"modelId": model_id, "name": set_name, "creatorId": creator_id, "creatorName": "actstore",
                             "description": f"{latents.info.architecture} SAE {latents.name!r} on {latents.info.site} "
                                            f"({latents.info.d_sae} latents)", "visibility": "PUBLIC", "urls": []}],
        "source.jsonl": [{"id": source_id, "modelId": model_id, "setName": set_name, "creatorId": creator_id,
                          "visibility": "PUBLIC", "hasDashboards": True, "num_prompts": latents.store.meta.n_ctx,
                          "num_tokens_in_prompt": latents.store.meta.ctx_len, "notes": f"actstore SAE {latents.name}"}],
        "features/batch-0.jsonl.gz": neurons,
        "activations/batch-0.jsonl.gz": activations,
    }
    if explanations is None:
        explanations = stored_explanations(latents, features)
    if explanations.height:
        tables["explanations/batch-0.jsonl.gz"] = explanation_rows(explanations, model_id=model_id, source_id=source_id,
                                                                    creator_id=creator_id)
    for name, rows in tables.items():
        _write_jsonl(folder / name, rows)
    return ExportSummary(folder, {name: len(rows) for name, rows in tables.items()})


def _model(latents: Latents, model_id: str, creator_id: str) -> dict[str, Any]:
    """The ``Model`` row (the importer never overwrites an existing one)."""
    source = str((latents.store.meta.model or {}).get("name") or model_id)
    return {"id": model_id, "displayName": model_id, "displayNameShort": model_id, "creatorId": creator_id,
            "owner": source.split("/")[0] if "/" in source else source, "layers": 0, "neuronsPerLayer": 0,
            "instruct": model_id.endswith("-it"), "visibility": "PUBLIC"}


def _frequency_histogram(latents: Latents, latent: int, bins: int, where: Where | None) -> dict[str, list[float]]:
    """Equal-width bins over [0, max] of the latent's values (Neuronpedia plots them on a linear
    axis and labels bar ``i`` as ``value ± half the spacing``): bar values are the bin centres."""
    _, values = latents.all_postings(latent, where=where)
    if values.size == 0:
        return {"freq_hist_data_bar_heights": [], "freq_hist_data_bar_values": []}
    heights, edges = np.histogram(values.astype(np.float64), bins=bins, range=(0.0, float(values.max())))
    return {"freq_hist_data_bar_heights": heights.astype(float).tolist(),
            "freq_hist_data_bar_values": ((edges[:-1] + edges[1:]) / 2).tolist()}


def _activations(latents: Latents, latent: int, key: dict[str, str], max_value: float, count: int, *, k: int,
                 window: int, bins: int, per_bin: int, where: Where | None) -> list[dict[str, Any]]:
    """Top examples (``binMin`` -1, ``binMax`` the latent's max, ``binContains`` -1, as
    SAEDashboard writes them), then samples of equal-width intervals with the fraction of the
    latent's occurrences each holds; ``qualifyingTokenIndex`` is the sampled token."""
    rows = [(row, "top", -1.0, max_value, -1.0)
            for row in latents.top_k(latent, k=k, window=window, where=where).iter_rows(named=True)]
    if count:
        rows += [(row, f"bin{row['bin']}", float(row["bin_min"]), float(row["bin_max"]), row["bin_count"] / count)
                 for row in latents.quantile_examples(latent, bins=bins, per_bin=per_bin, kind="width", window=window,
                                                      where=where).iter_rows(named=True)]
    out = []
    for row, kind, bin_min, bin_max, contains in rows:
        values = [float(v) for v in row["values"]]
        out.append({
            "id": f"{key['modelId']}@{key['layer']}@{latent}@{kind}@{row['ctx']}:{row['pos']}", **key, "index": str(latent),
            "tokens": row["tokens"], "values": values, "maxValue": max(values), "minValue": min(values),
            "maxValueTokenIndex": int(np.argmax(values)), "qualifyingTokenIndex": int(row["focus"]),
            "binMin": bin_min, "binMax": bin_max, "binContains": contains, "dataSource": "actstore",
            "dataIndex": f"doc {row['doc']} ctx {row['ctx']} pos {row['pos']}",
        })
    return out


def stored_explanations(latents: Latents, features: Sequence[int]) -> pl.DataFrame:
    """The store's labels and parsed explanations of ``features`` as :data:`EXPLANATION_COLUMNS`,
    each row's scorer metrics and checks (``embedding_*``, ``detection_*``, ``fuzzing_*``) gathered
    into ``scores``."""
    table = latents.explanations().filter(pl.col("latent").is_in([int(f) for f in features]) & pl.col("text").is_not_null())
    metrics = [c for c in table.columns if c.startswith(tuple(f"{s}_" for s in SCORERS))]
    scores = pl.struct(metrics) if metrics else pl.lit(None)
    return table.select("latent", "text", "kind", "author", scores.alias("scores"))


def explanation_rows(frame: pl.DataFrame, *, model_id: str, source_id: str, creator_id: str = DEFAULT_CREATOR_ID) -> list[dict[str, Any]]:
    """``Explanation`` rows from a frame of :data:`EXPLANATION_COLUMNS`: ``latent``, ``text``,
    ``kind`` (e.g. ``label`` or ``auto``), ``author`` (a person or the explainer model) and
    ``scores`` (a struct or JSON string of named scores, or null). ``typeName`` and
    ``explanationModelName`` are foreign keys into lists an actstore export cannot know, so
    kind, author and scores go into ``notes``; ``authorId`` is the creator."""
    missing = set(EXPLANATION_COLUMNS) - set(frame.columns)
    if missing:
        raise ConfigError(f"explanations need columns {list(EXPLANATION_COLUMNS)}; missing {sorted(missing)}")
    rows = []
    for i, r in enumerate(frame.select(EXPLANATION_COLUMNS).iter_rows(named=True)):
        scores = r["scores"]
        if isinstance(scores, dict):  # a struct of metrics: the ones a row has (a label has none)
            scores = json.dumps({k: v for k, v in scores.items() if v is not None}, sort_keys=True) if any(
                v is not None for v in scores.values()) else None
        rows.append({"id": f"{model_id}@{source_id}@{r['latent']}@explanation{i}", "modelId": model_id, "layer": source_id,
                     "index": str(r["latent"]), "description": str(r["text"]), "authorId": creator_id,
                     "notes": f"{r['kind']} by {r['author']}" + (f"; scores {scores}" if scores else "")})
    return rows


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    opener: Any = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
