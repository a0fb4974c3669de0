"""The explanations table of an SAE: append-only Parquet parts, each committed by a manifest.

``explanations/<sae>/part-<id>.parquet`` holds rows; ``explanations/<sae>/_committed/<id>.json``
is written after it and commits it. ``<id>`` is a fresh uuid4 per part, so two writers (two
``actstore explain`` runs, a label typed while a run goes on) never touch one object, and a
part is never rewritten. Readers list the manifests and read only the parts they name, so a
part whose writer died before committing is invisible. Works on any fsspec location (S3...).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import polars as pl

from actstore.errors import ConfigError

if TYPE_CHECKING:
    from actstore.store.store import Store

__all__ = ["CURRENT_SCHEMA", "EXPLANATION_SCHEMA", "METRICS", "SCORED_KINDS", "SCORERS", "PartCache",
           "append_explanations", "committed_parts", "current_explanations", "headline_metric", "human_row", "mean_score",
           "readable", "scan_explanations", "scorer_columns"]

PREFIX = "explanations"
READERS = 16  # parts read at once: a fully explained SAE has thousands, each one small GET
SCORERS = ("embedding", "detection", "fuzzing")
METRICS: dict[str, pl.DataType] = {
    "balanced_accuracy": pl.Float64(), "precision": pl.Float64(), "recall": pl.Float64(), "f1": pl.Float64(),
    "auroc": pl.Float64(), "n": pl.Int64(), "precision_at_density": pl.Float64(),
    "yes_rate": pl.Float64(), "spread": pl.Float64(), "baseline": pl.Float64(), "informative": pl.Boolean(),
}
EXPLANATION_SCHEMA = pl.Schema({
    "latent": pl.Int64(), "text": pl.String(), "kind": pl.String(), "author": pl.String(),
    "template_hash": pl.String(), "sampling": pl.String(), "explainer_examples": pl.List(pl.Int64()),
    "test_examples": pl.List(pl.Int64()), "negative_examples": pl.List(pl.Int64()), "parsed": pl.Boolean(),
    "raw": pl.String(), "key": pl.String(), "created": pl.String(), "baseline_latent": pl.Int64(),
    "baseline_text": pl.String(),
    **{f"{s}_{m}": dtype for s in SCORERS for m, dtype in METRICS.items()},
})
CURRENT_SCHEMA = pl.Schema({"latent": pl.Int64(), "text": pl.String(), "kind": pl.String(), "author": pl.String(),
                            "score": pl.Float64(), "created": pl.String(), "key": pl.String()})
SCORED_KINDS = ("auto", "profile")  # kinds whose rows carry scores (a label has none)


def _folder(sae: str) -> str:
    return f"{PREFIX}/{sae}"


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


def human_row(latent: int, text: str, *, author: str) -> dict[str, Any]:
    """A manual label as a table row (no template, examples or scores)."""
    text = text.strip()
    if not text:
        raise ConfigError("a label needs some text; got an empty string")
    if not author.strip():
        raise ConfigError("a label needs an author (e.g. your name or handle)")
    created = utc_now()
    key = hashlib.sha256(json.dumps(["human", latent, text, author, created]).encode()).hexdigest()
    return {"latent": int(latent), "text": text, "kind": "human", "author": author, "parsed": True, "key": key,
            "created": created, "explainer_examples": [], "test_examples": [], "negative_examples": []}


def append_explanations(store: Store, sae: str, rows: list[dict[str, Any]]) -> str | None:
    """Write ``rows`` as one new part and commit it; returns the part id (None for no rows).

    Missing columns are null; unknown columns are refused before anything is written.
    """
    if not rows:
        return None
    unknown = sorted({k for r in rows for k in r} - set(EXPLANATION_SCHEMA))
    if unknown:
        raise ConfigError(f"unknown explanation columns {unknown}; the table has {list(EXPLANATION_SCHEMA)}")
    frame = pl.DataFrame([{k: r.get(k) for k in EXPLANATION_SCHEMA} for r in rows], schema=EXPLANATION_SCHEMA)
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    data = buffer.getvalue()
    part = uuid.uuid4().hex
    store.files.write_bytes(f"{_folder(sae)}/part-{part}.parquet", data)
    store.files.write_json(f"{_folder(sae)}/_committed/{part}.json", {
        "part": f"part-{part}.parquet", "rows": frame.height, "sha256": hashlib.sha256(data).hexdigest(),
        "created": utc_now()})
    return part


class PartCache:
    """What a reader of one SAE's table has read: each committed part by id (a committed part
    never changes) and the table they made. With it a reader pays one listing per read, plus
    the parts committed since; a fully explained SAE has thousands of parts (``commit_every``
    results each, a label each)."""

    def __init__(self) -> None:
        self.parts: dict[str, pl.DataFrame] = {}
        self.table: tuple[tuple[str, ...], pl.DataFrame] | None = None  # (the parts it holds, the table)


def committed_parts(store: Store, sae: str) -> tuple[str, ...]:
    """The ids of ``sae``'s committed parts, in order (one listing): the table's version, as
    parts are only ever added."""
    return tuple(name.removesuffix(".json") for name in store.files.list(f"{_folder(sae)}/_committed")
                 if name.endswith(".json"))


def scan_explanations(store: Store, sae: str, *, cache: PartCache | None = None) -> pl.LazyFrame:
    """Every committed row of ``sae``'s table (all kinds, all versions), in part order;
    ``cache``: keeps what was read for the next call (see :class:`PartCache`)."""
    folder = _folder(sae)
    parts = committed_parts(store, sae)
    if not parts:
        return pl.LazyFrame(schema=EXPLANATION_SCHEMA)
    cache = cache or PartCache()
    if cache.table is None or cache.table[0] != parts:
        missing = [p for p in parts if p not in cache.parts]
        with ThreadPoolExecutor(max_workers=min(READERS, max(len(missing), 1))) as pool:  # GETs overlap on S3
            cache.parts.update(zip(missing, pool.map(
                lambda p: pl.read_parquet(io.BytesIO(store.files.read_bytes(f"{folder}/part-{p}.parquet"))), missing),
                strict=True))
        cache.table = (parts, _conformed(pl.concat([cache.parts[p] for p in parts], how="diagonal_relaxed")))
    return cache.table[1].lazy()


def _conformed(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with the table's columns in order: a column that older parts lack (the
    embedding scorer, the informativeness checks) is null there."""
    missing = [pl.lit(None, dtype).alias(name) for name, dtype in EXPLANATION_SCHEMA.items() if name not in frame.columns]
    return frame.with_columns(missing).select(list(EXPLANATION_SCHEMA)).cast(EXPLANATION_SCHEMA)  # type: ignore[arg-type]


def headline_metric(scorer: str) -> pl.Expr:
    """A scorer's ranking number: its AUROC, else (no probabilities) its balanced accuracy."""
    return pl.coalesce(pl.col(f"{scorer}_auroc"), pl.col(f"{scorer}_balanced_accuracy"))


def mean_score(columns: tuple[str, ...] = SCORERS) -> pl.Expr:
    """The ranking score of a scored row (auto or profile): the mean of the informative scorers'
    AUROC (balanced accuracy where a judge gave no probabilities); null when no scorer was
    informative (rows written before the check have none, so they have no score either)."""
    return pl.mean_horizontal([pl.when(pl.col(f"{s}_informative")).then(headline_metric(s)) for s in columns])


def current_explanations(frame: pl.LazyFrame | pl.DataFrame, *, keep: tuple[str, ...] = ()) -> pl.DataFrame:
    """One row per latent: its latest human label; else its best-scored parsed automatic or
    profile explanation (informative scorers only; ties: the latest); else, when no explanation
    of it has an informative score, its token profile (exact evidence) rather than an unscored
    automatic answer; else its latest automatic one. Columns: :data:`CURRENT_SCHEMA`, then the
    table's columns named in ``keep`` (e.g. each scorer's metrics) from the same row."""
    rows = frame.lazy().filter(pl.col("parsed")).with_columns(
        score=pl.when(pl.col("kind").is_in(SCORED_KINDS)).then(mean_score()).otherwise(None),
        human=(pl.col("kind") == "human").cast(pl.Int8),
        profile=(pl.col("kind") == "profile").cast(pl.Int8),
    )
    order = ["human", "score", "profile", "created"]
    best = rows.sort(order, descending=True, nulls_last=True).group_by("latent", maintain_order=True).first()
    return best.select(*CURRENT_SCHEMA, *keep).sort("latent").collect().cast(CURRENT_SCHEMA)  # type: ignore[arg-type]


def scorer_columns(scorer: str) -> list[str]:
    """The table's columns of one scorer, metrics and checks."""
    return [f"{scorer}_{m}" for m in METRICS]


def readable(frame: pl.DataFrame, *, current: bool = False) -> pl.DataFrame:
    """Explanations for people (the CLI's table): ``latent, kind, author, text, score``, then per
    scorer that scored any row its AUROC (balanced accuracy without probabilities) as text, or
    ``uninformative`` where its checks failed (a number there is no evidence), ``unchecked`` for
    a row written before the checks existed. ``current``: one row per latent, as
    :func:`current_explanations` picks it."""
    used = [s for s in SCORERS if frame[f"{s}_n"].is_not_null().any()]
    keep = tuple(c for s in used for c in (f"{s}_auroc", f"{s}_balanced_accuracy", f"{s}_informative"))
    rows = current_explanations(frame, keep=keep) if current else frame.with_columns(
        score=pl.when(pl.col("kind").is_in(SCORED_KINDS)).then(mean_score()).otherwise(None))
    verdicts = [pl.when(headline_metric(s).is_null()).then(pl.lit(""))
                .when(pl.col(f"{s}_informative").is_null()).then(pl.lit("unchecked"))
                .when(pl.col(f"{s}_informative")).then(headline_metric(s).round(3).cast(pl.String))
                .otherwise(pl.lit("uninformative")).alias(s) for s in used]
    return rows.select("latent", "kind", "author", "text", pl.col("score").round(3), *verdicts)
