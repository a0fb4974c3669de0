"""Finding latents: by the words of their explanations (BM25), or by a piece of text (which
latents fire unusually high where the stored corpus holds it).

Lexical search ranks every parsed explanation (labels and automatic ones, all versions) with
``bm25s`` and keeps each latent's best hit: no embedding API is needed. Search by example
encodes the text with the store's tokenizer, finds the stored contexts holding that token
sequence, reads the codes of those tokens, and ranks the latents firing there by evidence: the
percentile of their value within their own distribution (the stored histograms) at every place,
silent places counting 0, less what a random stretch of text gives them, shrunk by support
(:func:`example_evidence`). A latent firing high at most places outranks one that fired once
very high, and a rare latent outranks an always-on one.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import polars as pl

from actstore.errors import ConfigError, IndexNotFoundError
from actstore.explain.profile import PROFILE_AUTHOR, profile_texts
from actstore.explain.table import SCORED_KINDS, mean_score
from actstore.query.tokens import encode_text
from actstore.store.codes import read_codes
from actstore.store.stats import HIST_EDGES

__all__ = ["EXAMPLE_SEARCH_SCHEMA", "SEARCH_SCHEMA", "example_evidence", "search_by_example", "search_explanations",
           "searchable_rows",
           "value_percentiles"]

SEARCH_SCHEMA = pl.Schema({"rank": pl.Int64(), "latent": pl.Int64(), "text": pl.String(), "kind": pl.String(),
                           "author": pl.String(), "match": pl.Float64(), "score": pl.Float64(),
                           "density": pl.Float64()})
INDEXES_KEPT = 4  # SAEs whose BM25 index (and profile texts) a process keeps
_INDEXES: dict[tuple[str, str], tuple[int, Any]] = {}  # (store URL, SAE) -> (the rows it indexes, the index)
_PROFILES: dict[tuple[str, str, str], pl.DataFrame] = {}  # (store URL, SAE, index build) -> profile texts
ROW_COLUMNS = pl.Schema({"latent": pl.Int64(), "text": pl.String(), "kind": pl.String(), "author": pl.String(),
                         "key": pl.String(), "created": pl.String(), "score": pl.Float64()})
EXAMPLE_SEARCH_SCHEMA = pl.Schema({"rank": pl.Int64(), "latent": pl.Int64(), "evidence": pl.Float64(),
                                   "percentile": pl.Float64(), "value": pl.Float64(), "places": pl.Int64(),
                                   "searched": pl.Int64(), "density": pl.Float64(), "label": pl.String()})
EVIDENCE_PRIOR = 3.0  # places of support at which a latent's evidence counts half (search by example)


# a word of an explanation: one character is enough ("the letter x", "the digit 7", "C code");
# bm25s's default needs two, so a search for "x" found nothing
WORD = r"(?u)\b\w+\b"


def search_explanations(latents: Any, query: str, *, top: int = 20) -> pl.DataFrame:
    """Latents whose explanations match ``query`` best (BM25 ``match``), one row per latent with
    its best-matching explanation or token profile, that explanation's ``score`` (the mean of its
    informative scorers; null for a label or profile) and the latent's density. Columns: :data:`SEARCH_SCHEMA`."""
    import bm25s

    # bm25s sets its own logger to DEBUG on import, which would print index-building chatter
    # through any application's root handler; keep it at the library default instead.
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    if top < 1:
        raise ConfigError(f"top must be >= 1, got {top}")
    rows = searchable_rows(latents)
    words = bm25s.tokenize([query], stopwords="en", token_pattern=WORD, return_ids=False, show_progress=False)
    if rows.is_empty() or not words or not words[0]:
        return pl.DataFrame(schema=SEARCH_SCHEMA)
    found, match = _bm25(latents, rows).retrieve(words, k=rows.height, show_progress=False)
    hits = pl.DataFrame({"row": found[0].astype(np.int64), "match": match[0].astype(np.float64)}).filter(pl.col("match") > 0)
    density = latents.density().select("latent", "density")
    out = (hits.join(rows.with_row_index("row").with_columns(pl.col("row").cast(pl.Int64)), on="row")
           .sort(["match", "created"], descending=True, nulls_last=True).unique("latent", keep="first", maintain_order=True)
           .head(top)
           .join(density, on="latent", how="left"))
    return out.with_columns(rank=pl.int_range(pl.len(), dtype=pl.Int64)).select(list(SEARCH_SCHEMA)).cast(SEARCH_SCHEMA)


def searchable_rows(latents: Any) -> pl.DataFrame:
    """What lexical search looks through for one SAE: its parsed explanations with their
    ``score`` (null for a label) and every firing latent's token profile in words. Columns:
    ``ROW_COLUMNS``."""
    table = latents.explanations().filter(pl.col("parsed")).with_columns(
        score=pl.when(pl.col("kind").is_in(SCORED_KINDS)).then(mean_score()).otherwise(None))
    return pl.concat([table.select(list(ROW_COLUMNS)), _profile_rows(latents, table)], how="vertical_relaxed")


def _profile_rows(latents: Any, table: pl.DataFrame) -> pl.DataFrame:
    """Every firing latent's token profile in words as a ``profile`` row (no score), for the
    latents whose table holds no profile row yet: a profile is searchable before anything is
    explained. Empty when the index has no profiles (or there is no index)."""
    try:
        build = latents.index.build_id
    except IndexNotFoundError:
        return pl.DataFrame(schema=ROW_COLUMNS)
    place = (latents.store.location.url, latents.name, build)
    texts = _PROFILES.get(place)
    if texts is None:
        try:
            texts = profile_texts(latents)
        except IndexNotFoundError:
            texts = pl.DataFrame(schema={"latent": pl.Int64(), "text": pl.String()})
        while len(_PROFILES) >= INDEXES_KEPT:
            _PROFILES.pop(next(iter(_PROFILES)), None)
        _PROFILES[place] = texts
    have = table.filter(pl.col("kind") == "profile")["latent"]
    return texts.filter(~pl.col("latent").is_in(have.implode())).with_columns(
        kind=pl.lit("profile"), author=pl.lit(PROFILE_AUTHOR), key=pl.format("profile:{}", "latent"),
        created=pl.lit(None, pl.String()), score=pl.lit(None, pl.Float64())).select(list(ROW_COLUMNS)).cast(ROW_COLUMNS)


def _bm25(latents: Any, rows: pl.DataFrame) -> Any:
    """The BM25 index of ``rows``' texts, kept per SAE until its explanations change: building
    it is most of a search's time on a fully explained SAE (~160 ms for 16k explanations)."""
    import bm25s

    place = (latents.store.location.url, latents.name)
    version = hash(tuple(zip(rows["key"].to_list(), rows["text"].to_list(), strict=True)))
    kept = _INDEXES.get(place)
    if kept is None or kept[0] != version:
        index = bm25s.BM25()
        index.index(bm25s.tokenize(rows["text"].to_list(), stopwords="en", token_pattern=WORD, show_progress=False),
                    show_progress=False)
        while len(_INDEXES) >= INDEXES_KEPT:
            _INDEXES.pop(next(iter(_INDEXES)), None)
        kept = _INDEXES[place] = (version, index)
    return kept[1]


def value_percentiles(hist: np.ndarray, latent_ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Percentile (0-100) of each value within its latent's non-zero values, from the stored
    histogram ([d_sae, bins] on ``HIST_EDGES``): the values below its bin plus half its bin."""
    bins = np.searchsorted(HIST_EDGES, values, side="right")
    rows = hist[latent_ids].astype(np.float64)
    below = np.cumsum(rows, axis=1)[np.arange(rows.shape[0]), bins] - rows[np.arange(rows.shape[0]), bins]
    total = np.maximum(rows.sum(axis=1), 1)
    return 100 * (below + 0.5 * rows[np.arange(rows.shape[0]), bins]) / total


def search_by_example(latents: Any, text: str, *, top: int = 20, limit: int = 200, where: Any = None) -> pl.DataFrame:
    """Latents firing where the stored corpus holds ``text`` (its tokens, at up to ``limit``
    places: the first in store order, in the documents ``where`` matches), ranked by the
    evidence that they stand for it (:func:`example_evidence`): firing at most of the places,
    unusually high for themselves, more than at a random stretch of text. ``label``: the current
    explanation. Columns: :data:`EXAMPLE_SEARCH_SCHEMA`; empty when the text is nowhere in the store."""
    store, ctx_len = latents.store, latents.store.meta.ctx_len
    ids = encode_text(store, text)
    if not ids:
        raise ConfigError(f"the text {text!r} has no tokens")
    places = store.find_tokens(ids, limit=limit, window=0, where=where)
    if places.is_empty():
        return pl.DataFrame(schema=EXAMPLE_SEARCH_SCHEMA)
    first = places["ctx"].to_numpy() * ctx_len + places["pos"].to_numpy().astype(np.int64)
    flat = (first[:, None] + np.arange(len(ids))[None, :]).reshape(-1)  # every token of every match
    place = np.repeat(np.arange(first.size), len(ids))
    ctxs, inverse = np.unique(flat // ctx_len, return_inverse=True)
    codes = read_codes(store, latents.name, ctxs)
    assert codes.idx is not None and codes.val is not None
    idx, val = codes.idx[inverse, flat % ctx_len], codes.val[inverse, flat % ctx_len].astype(np.float64)
    fired = idx >= 0
    latent_ids, values = idx[fired].astype(np.int64), val[fired]
    density = latents.density()
    hist = np.asarray(density["hist"].to_list(), np.int64)
    frame = pl.DataFrame({"latent": latent_ids, "value": values, "place": np.broadcast_to(place[:, None], idx.shape)[fired],
                          "percentile": value_percentiles(hist, latent_ids, values)})
    ranked = (example_evidence(frame, density.select("latent", "density"), places=first.size, width=len(ids))
              .join(latents.explanations(current=True).select("latent", label="text"), on="latent", how="left")
              .sort(["evidence", "percentile", "latent"], descending=[True, True, False]).head(top))
    return ranked.with_columns(rank=pl.int_range(pl.len(), dtype=pl.Int64)).select(list(EXAMPLE_SEARCH_SCHEMA)).cast(
        EXAMPLE_SEARCH_SCHEMA)


def example_evidence(fired: pl.DataFrame, density: pl.DataFrame, *, places: int, width: int,
                     prior_places: float = EVIDENCE_PRIOR) -> pl.DataFrame:
    """Per latent, how strongly the ``places`` searched say it stands for the text.

    ``fired``: one row per (latent, place, value, percentile) where a latent fired on one of a
    place's ``width`` tokens. A latent scores at each place the percentile of its highest value
    there (0 where it is silent); ``evidence`` is the mean over all places less what a random
    stretch of ``width`` tokens would give it (``50 * (1 - (1 - density) ** width)``: it fires
    there that often, at its median), shrunk toward 0 by support: ``places / (places +
    prior_places)``. So one lucky place, a rare match, or an always-on latent all rank low; a
    latent firing high at most places ranks first. Columns: latent, evidence, percentile (its
    highest value's), value (highest), places (where it fired), searched, density.
    """
    per_place = fired.group_by("latent", "place").agg(pl.col("percentile").max(), pl.col("value").max())
    return (per_place.group_by("latent")
            .agg(total=pl.col("percentile").sum(), percentile=pl.col("percentile").max(), value=pl.col("value").max(),
                 places=pl.len().cast(pl.Int64))
            .join(density, on="latent", how="left")
            .with_columns(searched=pl.lit(places, pl.Int64),
                          evidence=(pl.col("total") - places * 50 * (1 - (1 - pl.col("density")) ** width))
                          / (places + prior_places))
            .drop("total"))
