"""What each page shows, as plain JSON-ready data: the JSON API returns these dicts and the
HTML pages render the same dicts, so both surfaces share one implementation. Every number and
string comes from the Python query API (``actstore.open(url).sae(name)``); nothing here reads
store arrays itself.

Result sizes are bounded (``LIMITS``): a request past a bound is refused with a message naming
the bound, before any work.
"""

from __future__ import annotations

import io
import math
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from actstore.errors import IndexNotFoundError, LogitsNotFoundError, RequestError
from actstore.explain.table import SCORERS, current_explanations, headline_metric, mean_score
from actstore.query.tokens import encode_text, find_sequences
from actstore.web import related
from actstore.web.layers import by_layer, site_place
from actstore.web.source import StoreSource

__all__ = ["LIMITS", "SEARCH_BY", "SORT_COLUMNS", "feature_view", "latent_search_view", "neuronpedia_zip", "sae_view",
           "search_view", "store_view"]

LIMITS = {"k": 100, "window": 64, "per_doc": 100, "bins": 20, "per_bin": 10, "cofiring": 100, "similar": 100,
          "per_page": 500, "page": 1_000_000, "limit": 200, "text": 400, "top": 100}
SORT_COLUMNS = ("latent", "count", "density", "mean", "max", "label", "score")
SCORE_COLUMNS = tuple(f"score_{s}" for s in SCORERS)  # each scorer's AUROC (balanced accuracy without probabilities)
JUDGED = [c for s in SCORERS for c in (f"{s}_auroc", f"{s}_balanced_accuracy", f"{s}_informative")]  # what they read
VERDICTS = [e for s in SCORERS for e in (headline_metric(s).alias(f"score_{s}"),  # and whether it is evidence
                                         pl.col(f"{s}_informative").alias(f"informative_{s}"))]
SEARCH_BY = ("explanations", "example")
DENSITY_BINS = 40


def finite(name: str, value: float | None) -> float | None:
    """``value`` when it is a finite number (or None: not given), else a :class:`RequestError`:
    NaN passes no comparison and would filter silently, an infinity is no bound."""
    if value is not None and not math.isfinite(value):
        raise RequestError(f"{name} must be a finite number, got {value!r}")
    return value


def bounded(name: str, value: int, lo: int = 1) -> int:
    """``value`` when it lies in [lo, LIMITS[name]], else a :class:`RequestError` naming the bound."""
    if not lo <= value <= LIMITS[name]:
        raise RequestError(f"{name} must be between {lo} and {LIMITS[name]}, got {value}")
    return value


def store_view(source: StoreSource) -> dict[str, Any]:
    """The store page: its summary, model, sites, and per SAE its layer and site kind, mean L0 and
    L0 and density histograms; ``by_layer`` places the SAEs in a table of layers by kinds."""
    store = source.store
    saes = []
    for info in store.meta.saes:
        latents = source.sae(info.name)
        try:
            indexed = latents.index.complete
        except IndexNotFoundError:
            indexed = False
        density = latents.density().select("density").to_series().to_numpy()
        alive = density[density > 0]
        high = max(float(np.ceil(np.log10(alive.max()))), 0.0) if alive.size else 0.0
        low = min(float(np.floor(np.log10(alive.min()))), high - 1) if alive.size else -6.0
        counts, edges = np.histogram(np.log10(alive), bins=DENSITY_BINS, range=(low, high))
        l0 = latents.l0_hist()
        last = int(np.flatnonzero(l0)[-1]) + 1 if l0.any() else 1
        saes.append({**info.model_dump(mode="json"), "indexed": indexed, "dead": int(density.size - alive.size),
                     "density_hist": {"log10_edges": edges.tolist(), "counts": counts.tolist()},
                     "l0_hist": {"counts": l0[:last].tolist()}, **site_place(info.site),
                     "mean_l0": float((l0 * np.arange(l0.size)).sum() / max(l0.sum(), 1))})
    return {"info": store.info(with_bytes=False).to_dict(), "model": store.meta.model,
            "sites": [s.model_dump(mode="json") for s in store.meta.sites], "saes": saes, "by_layer": by_layer(saes)}


def sae_view(source: StoreSource, sae: str, *, sort: str = "count", order: Literal["asc", "desc"] = "desc",
             min_density: float | None = None, max_density: float | None = None, label: str = "",
             min_score: float | None = None, max_score: float | None = None, page: int = 1,
             per_page: int = 50, where: str = "") -> dict[str, Any]:
    """One page of the SAE's latents table (latent, count, density, mean, max, and the current
    explanation: label, kind, author, score and each judge's ``score_<scorer>``), filtered by
    density, by a case-insensitive substring of the label and by score, sorted by ``sort``
    (latents without a label or score last in either order); ties broken by latent id.
    ``where``: a document filter (SQL); counts and densities are then the matching documents'."""
    if sort not in SORT_COLUMNS:
        raise RequestError(f"sort must be one of {list(SORT_COLUMNS)}, got {sort!r}")
    if order not in ("asc", "desc"):
        raise RequestError(f"order must be 'asc' or 'desc', got {order!r}")
    bounded("per_page", per_page), bounded("page", page)
    for name, value in (("min_density", min_density), ("max_density", max_density), ("min_score", min_score),
                        ("max_score", max_score)):
        finite(name, value)
    _check_length("the label filter", label)
    _check_length("the document filter", where)
    latents = source.sae(sae)
    explained = _current_labels(latents)
    frame = latents.density(where=where or None).drop("hist").join(explained, on="latent", how="left")
    for column, low, high in (("density", min_density, max_density), ("score", min_score, max_score)):
        if low is not None:
            frame = frame.filter(pl.col(column) >= low)
        if high is not None:
            frame = frame.filter(pl.col(column) <= high)
    if label:
        frame = frame.filter(pl.col("label").str.to_lowercase().str.contains(label.lower(), literal=True))
    keys = [sort] if sort == "latent" else [sort, "latent"]
    frame = frame.sort(keys, descending=[order == "desc", False][: len(keys)], nulls_last=True)
    total = frame.height
    rows = frame.slice((page - 1) * per_page, per_page).to_dicts()
    return {"sae": sae, "d_sae": latents.info.d_sae, "site": latents.info.site, "total": total, "page": page,
            "per_page": per_page, "pages": max(-(-total // per_page), 1), "sort": sort, "order": order,
            "min_density": min_density, "max_density": max_density, "label": label, "min_score": min_score,
            "max_score": max_score, "explained": explained.height, "where": where,
            "scorers": _scored(explained), "rows": rows}


def _scored(frame: pl.DataFrame) -> list[str]:
    """The judges with a score somewhere in ``frame``'s ``score_<scorer>`` columns: a page shows a column for each."""
    return [s for s, c in zip(SCORERS, SCORE_COLUMNS, strict=True) if frame[c].is_not_null().any()]


def _current_labels(latents: Any) -> pl.DataFrame:
    """Per explained latent its current explanation (``explanations(current=True)``) as label,
    kind, author and score, with each scorer's ``score_<scorer>`` of that explanation and
    ``informative_<scorer>`` (false: the number is no evidence; null: not checked)."""
    return current_explanations(latents.explanations(), keep=tuple(JUDGED)).select(
        "latent", pl.col("text").alias("label"), "kind", "author", "score", *VERDICTS)


def feature_view(source: StoreSource, sae: str, latent: int, *, k: int = 20, window: int = 12, per_doc: int = 0,
                 bins: int = 5, per_bin: int = 3, cofiring: int = 20, similar: int = 10, where: str = "") -> dict[str, Any]:
    """The feature page: density and histogram, output logits when the store keeps them, the
    true top ``k`` contexts (``per_doc``: at most that many per document; 0: no limit),
    equal-count and equal-width quantile samples, co-firing latents (exact, or on a stated
    sample: :func:`actstore.web.related.cofiring_panel`) and latents with similar decoder
    directions, both labelled; the token profile; ``documents``: the name of every document shown. All as the
    query API returns them, over the documents ``where`` (SQL) matches when given."""
    bounded("k", k), bounded("window", window, 0), bounded("per_doc", per_doc, 0), bounded("bins", bins)
    bounded("per_bin", per_bin), bounded("cofiring", cofiring), bounded("similar", similar)
    _check_length("the document filter", where)
    latents = source.sae(sae)
    docs = latents.select_documents(where or None)  # resolved once for every query below
    stats = latents.density(latent, where=docs).to_dicts()[0]
    fired = stats["count"] > 0
    explanations = _latent_explanations(latents, latent)
    quantiles = {kind: latents.quantile_examples(latent, bins=bins, per_bin=per_bin, kind=kind, window=window,
                                                 where=docs).to_dicts()
                 if fired else [] for kind in ("count", "width")}
    top = latents.top_k(latent, k=k, window=window, per_doc=per_doc or None, where=docs).to_dicts()
    shown = {row["doc"] for row in [*top, *quantiles["count"], *quantiles["width"]]}
    current = latents.explanations(current=True)
    return {"sae": sae, "latent": latent, "d_sae": latents.info.d_sae, "site": latents.info.site, "stats": stats,
            "hist_edges": np.asarray(latents.hist_edges).tolist(), "per_doc": per_doc, "where": where, "top": top,
            "quantiles": quantiles, "cofiring": related.cofiring_panel(latents, latent, current, top=cofiring, where=docs),
            "similar": related.similar_panel(latents, latent, current, top=similar),
            "documents": source.document_names(sorted(shown)), "explanations": explanations.to_dicts(),
            "scorers": _scored(explanations), **_logits(latents, latent), **_profile(latents, latent)}


def _profile(latents: Any, latent: int) -> dict[str, Any]:
    """The latent's token profile (kept with the index) and its description, or why there is none."""
    try:
        frame = latents.token_profile(latent)
    except IndexNotFoundError as exc:
        return {"profile": [], "profile_text": None, "profile_missing": str(exc)}
    return {"profile": frame.to_dicts(), "profile_text": latents.profile_text(latent), "profile_missing": None}


def _latent_explanations(latents: Any, latent: int) -> pl.DataFrame:
    """Every explanation of ``latent`` (``explanations(latent=...)``), the current one first
    (``current``: True), then newest first; ``score`` is the mean of the informative scorers'
    numbers (none for a label), ``score_<scorer>`` and ``informative_<scorer>`` each scorer's."""
    table = latents.explanations(latent=latent)
    current = current_explanations(table)["key"].to_list()
    return (table.with_columns(current=pl.col("key").is_in(current), score=mean_score())
            .sort(["current", "created"], descending=True)
            .select("current", "text", "kind", "author", "created", "parsed", "score", *VERDICTS, "key"))


def _logits(latents: Any, latent: int) -> dict[str, Any]:
    """Top and bottom output logits (``actstore logits`` keeps them), or why there are none."""
    try:
        return {"logits": latents.logits(latent).to_dicts(), "logits_missing": None}
    except LogitsNotFoundError as exc:
        return {"logits": [], "logits_missing": str(exc)}


def search_view(source: StoreSource, text: str, *, limit: int = 20, window: int = 12, where: str = "") -> dict[str, Any]:
    """Stored contexts containing ``text``'s token sequence (encoded as given), in the documents
    ``where`` (SQL) matches when given: ``total`` counts every match, ``matches`` the first
    ``limit`` in store order (``find_sequences``), with the names of their documents."""
    _check_text(text)
    _check_length("the document filter", where)
    bounded("limit", limit), bounded("window", window, 0)
    store = source.store
    found = find_sequences(store, [(text, encode_text(store, text))], limit=limit, window=window, where=where or None)
    matches = found.matches.to_dicts()
    return {"text": text, "limit": limit, "where": where, "total": found.total, "matches": matches,
            "documents": source.document_names(sorted({m["doc"] for m in matches}))}


def latent_search_view(source: StoreSource, text: str, *, by: str = "explanations", top: int = 20,
                       where: str = "") -> dict[str, Any]:
    """Latents of every SAE found by ``text``: ``by="explanations"`` ranks their explanations'
    words (BM25, ``sae.search``), ``by="example"`` the latents firing unusually high where the
    corpus holds the text (``sae.search_by_example``, in the documents ``where`` matches); ``top`` per SAE."""
    if by not in SEARCH_BY:
        raise RequestError(f"by must be one of {list(SEARCH_BY)}, got {by!r}")
    _check_text(text)
    _check_length("the document filter", where)
    bounded("top", top)
    found = []
    for info in source.store.meta.saes:
        latents = source.sae(info.name)
        frame = (latents.search(text, top=top) if by == "explanations"
                 else latents.search_by_example(text, top=top, where=where or None))
        found.append({"sae": info.name, "rows": frame.to_dicts()})
    return {"text": text, "by": by, "top": top, "where": where, "saes": found}


def _check_text(text: str) -> None:
    if not text.strip():
        raise RequestError("the search text is empty")
    _check_length("the search text", text)


def _check_length(what: str, text: str) -> None:
    if len(text) > LIMITS["text"]:
        raise RequestError(f"{what} is {len(text)} characters long; at most {LIMITS['text']} are allowed")


def neuronpedia_zip(source: StoreSource, sae: str, latent: int, *, model_id: str, source_id: str) -> bytes:
    """The Neuronpedia bulk-import files of one latent (``actstore export``), zipped in memory."""
    from actstore.neuronpedia import export_neuronpedia

    latents = source.sae(sae)
    latents.density(latent)  # refuses a latent out of range before anything is written
    with tempfile.TemporaryDirectory(prefix="actstore-export-") as tmp:
        summary = export_neuronpedia(latents, [latent], tmp, model_id=model_id, source_id=source_id)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
            for path in sorted(Path(summary.folder).rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(tmp).as_posix())
    return buf.getvalue()
