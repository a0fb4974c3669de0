"""Two models on the same stored tokens (model diffing): which SAE latents change, and where.

The SAE baseline of model diffing (Wang et al. 2025, arXiv 2506.19823): one SAE, trained on
model A, encodes both models' activations on the same tokens, and latents are ranked by how
their values change. A store holds a second model's sites under its tag
(``it.blocks.12.hook_resid_post``, :mod:`actstore.store.sitenames`) and that SAE's codes on them
(any name, the same weights: the same ``sha256``). Per latent, over the tokens both models read:

- token-level: firing rate and mean value in each model (zeros included, so ``change`` is the
  mean change per token), and the fraction of tokens where it fires in one model only;
- the test, with the *document* as the unit (tokens of one document are not independent): each
  document's mean change, the Wilcoxon signed-rank test over documents, its mean with a normal
  interval, Benjamini-Hochberg q-values over all latents (:mod:`actstore.contrast.stats`). With
  fewer than :data:`~actstore.contrast.documents.MIN_DOCUMENTS` documents the unit is the context.

Per site both models store (:func:`site_movement`): the mean relative change
``||b - a|| / ||a||`` and the mean cosine of the two models' activations on the same tokens, so
a researcher sees at which layer fine-tuning moves the residual stream.

Only document text counts: BOS (Gemma's has a huge norm), padding, the EOS separator and special
tokens (chat-template markers) are left out. ``where=`` restricts both to the documents a filter
matches (:mod:`actstore.query.filters`: the chat records only, one source...), and then only
their contexts are read. Both stream over the store one unit at a time (a unit's codes, or a few
contexts of activations), so memory does not grow with the store; the test holds one entry per
(document, latent) pair whose value changed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl

from actstore.contrast.documents import MIN_DOCUMENTS, Unit, ranked_latents
from actstore.contrast.stats import MIN_UNITS, bh_qvalues, mean_difference, signed_rank_test
from actstore.errors import ConfigError
from actstore.models.sites import parse_site
from actstore.query.filters import DocumentSet, Where, resolve_where
from actstore.store.codes import read_codes
from actstore.store.layout import FLAG_EOS, NOT_TEXT, activation_array, token_array
from actstore.store.metadata import SaeInfo
from actstore.store.sitenames import BASE, site_for, split_site

if TYPE_CHECKING:
    from actstore.store.store import Store

__all__ = ["MODELS_SCHEMA", "SITES_SCHEMA", "ModelContrast", "contrast_models", "model_tags", "paired_sae",
           "site_movement"]

TEXT_ONLY = NOT_TEXT | FLAG_EOS  # flags of the tokens left out: BOS, padding, EOS separator, specials
SITE_BLOCK_BYTES = 64 * 2**20  # activations read at once per model when measuring a site
MODELS_SCHEMA = pl.Schema({
    "rank": pl.Int64(), "latent": pl.Int64(), "label": pl.String(),
    "rate_a": pl.Float64(), "rate_b": pl.Float64(), "mean_a": pl.Float64(), "mean_b": pl.Float64(),
    "change": pl.Float64(), "only_a": pl.Float64(), "only_b": pl.Float64(), "units_changed": pl.Int64(),
    "effect": pl.Float64(), "ci_low": pl.Float64(), "ci_high": pl.Float64(), "rank_biserial": pl.Float64(),
    "p": pl.Float64(), "q": pl.Float64(),
})
"""Columns of a model contrast (B against A): ``rate_x`` fraction of tokens where the latent fires
in model X, ``mean_x`` its mean value over all tokens (zeros included), ``change`` = mean_b -
mean_a, ``only_x`` fraction of tokens where it fires in model X only, ``units_changed`` units
(documents or contexts) whose mean value changed, ``effect`` the mean over units of each unit's
mean change with its interval ``ci_low``..``ci_high``, ``rank_biserial`` the signed-rank test's
effect in [-1, 1], ``p`` its two-sided p-value, ``q`` the Benjamini-Hochberg q-value."""
SITES_SCHEMA = pl.Schema({
    "site": pl.String(), "layer": pl.Int32(), "tokens": pl.Int64(), "rel_l2": pl.Float64(),
    "cosine": pl.Float64(), "norm_a": pl.Float64(), "norm_b": pl.Float64(),
})
"""Columns of a site's movement: the site (as the models know it), its block, the tokens
compared, the mean of ``||b - a|| / ||a||`` and of ``cos(a, b)`` over them, and the two models'
mean activation norms."""


@dataclass(frozen=True)
class ModelContrast:
    """A model contrast's result: ``frame`` (:data:`MODELS_SCHEMA`, every latent, most significant
    first), ``sites`` (:data:`SITES_SCHEMA`, every site both models store, in forward order), the
    models and SAEs compared, the ``unit`` of the test and why, and the test in words."""

    a: str
    b: str
    sae_a: str
    sae_b: str
    unit: Literal["document", "context"]
    why: str
    test: str
    units: int
    tokens: int
    where: str | None
    frame: pl.DataFrame
    sites: pl.DataFrame

    def to_dict(self, *, top: int | None = None) -> dict[str, Any]:
        """JSON-ready: everything, with the first ``top`` latents (all: None) under ``rows``."""
        frame = self.frame if top is None else self.frame.head(top)
        head = {k: v for k, v in asdict(self).items() if k not in ("frame", "sites")}
        return {**head, "latents": self.frame.height, "rows": _records(frame), "site_rows": _records(self.sites)}

    def render(self, *, top: int = 20) -> str:
        """The models, unit and test, the first ``top`` latents, then every site's movement."""
        from actstore.query.render import render_frame

        shown = self.frame.head(top).select(
            "rank", "latent", "rate_a", "rate_b", "change", "only_a", "only_b", "effect", "ci_low", "ci_high",
            "units_changed", "q", pl.col("label").fill_null("").str.slice(0, 50))
        within = "" if self.where is None else f" of the documents where {self.where}"
        lines = [f"A  model {self.a!r}, SAE {self.sae_a}", f"B  model {self.b!r}, SAE {self.sae_b}",
                 f"{self.tokens:,} tokens in {self.units:,} {self.unit}s{within}, read by both",
                 f"unit: {self.unit} ({self.why})", f"test: {self.test}", "", render_frame(shown)]
        if self.sites.height:
            lines += ["", "how far each site moves from A to B (mean over the same tokens):", render_frame(self.sites)]
        return "\n".join(lines)


def _records(frame: pl.DataFrame) -> list[dict[str, Any]]:
    return frame.with_columns(pl.col(pl.Float64).fill_nan(None)).to_dicts()


def model_tags(store: Store) -> list[str]:
    """The models whose sites the store holds: :data:`BASE` (its own) and each further model's tag."""
    return [BASE, *sorted(store.meta.models)]


def _check_models(store: Store, a: str, b: str) -> None:
    known = model_tags(store)
    for tag in (a, b):
        if tag not in known:
            raise ConfigError(f"the store at {store.location.url!r} holds no model {tag!r}; it holds {known} "
                              f"({BASE!r} is its own model; add another with models: in the extract config)")
    if a == b:
        raise ConfigError(f"contrast two different models, not {a!r} with itself")


def paired_sae(store: Store, sae: str, tag: str) -> SaeInfo:
    """The SAE whose codes are ``sae``'s weights (same sha256) on model ``tag``'s copy of its site."""
    info = next((s for s in store.meta.saes if s.name == sae), None)
    if info is None:
        raise ConfigError(f"the store at {store.location.url!r} has no SAE {sae!r}; it has "
                          f"{[s.name for s in store.meta.saes] or 'none'}")
    site = site_for(split_site(info.site)[1], tag)
    found = [s for s in store.meta.saes if s.site == site and s.sha256 == info.sha256]
    if not found:
        suggested = sae if tag == BASE else f"{tag}.{sae}"
        raise ConfigError(f"the store holds no codes of SAE {sae!r}'s weights on model {tag!r} (site {site!r}); add "
                          f"{{name: {suggested}, site: {site}, path: {info.source}}} to the extract config's saes and run "
                          "extract again: one SAE encodes both models")
    return next((s for s in found if s.name == sae), found[0])


def contrast_models(store: Store, sae: str, a: str, b: str, *, where: Where | None = None, unit: Unit = "auto",
                    level: float = 0.95, labels: pl.DataFrame | None = None, sites: bool = True) -> ModelContrast:
    """Contrast model ``b`` with model ``a`` (tags, :func:`model_tags`) through SAE ``sae``'s codes
    on both, over the tokens both have committed (see the module doc), in the documents ``where``
    matches (all by default). ``labels``: ``latent``, ``label`` rows joined in; ``sites``: also
    measure every site both models store. Refused before any read: an unknown model or SAE, an
    SAE without codes on both models, a filter matching nothing."""
    _check_models(store, a, b)
    if unit not in ("auto", "document", "context"):
        raise ConfigError(f"unit must be 'auto', 'document' or 'context', got {unit!r}")
    info_a, info_b = paired_sae(store, sae, a), paired_sae(store, sae, b)
    docs = _documents(store, where)
    chosen, why = _unit(store.meta.ingest.n_documents if docs is None else int(docs.docs.size), unit)
    sums = _Sums(info_a.d_sae, store.meta.ingest.n_documents if chosen == "document" else store.meta.n_ctx)
    for block in _code_blocks(store, info_a, info_b, chosen, docs):
        sums.add(*block)
    if sums.units < 2:
        raise ConfigError(f"{sums.units} {chosen}s hold tokens both models' codes cover; a test needs at least two")
    frame = ranked_latents(sums.frame(level), labels, MODELS_SCHEMA)
    test = (f"two-sided Wilcoxon signed-rank over {chosen}s of each {chosen}'s mean change B - A (normal approximation, "
            f"tie- and continuity-corrected); q: Benjamini-Hochberg over all {info_a.d_sae:,} latents; effect: mean "
            f"per-{chosen} change, {level:.0%} normal interval")
    if sums.units < MIN_UNITS:
        why += f"; fewer than {MIN_UNITS} units: p-values are rough"
    moved = site_movement(store, a, b, where=docs) if sites else pl.DataFrame(schema=SITES_SCHEMA)
    return ModelContrast(a, b, info_a.name, info_b.name, chosen, why, test, sums.units, sums.tokens,
                         None if docs is None else docs.where, frame, moved)


def _documents(store: Store, where: Where | None) -> DocumentSet | None:
    docs = resolve_where(store, where)
    if docs is not None and docs.docs.size == 0:
        raise ConfigError(f"the document filter {docs.where!r} matches no documents")
    return docs


def _unit(documents: int, unit: str) -> tuple[Literal["document", "context"], str]:
    if unit == "document":
        return "document", "asked for"
    if unit == "context":
        return "context", "asked for; a document spanning several contexts counts several times"
    if documents >= MIN_DOCUMENTS:
        return "document", f"{documents:,} documents"
    return "context", (f"{documents} documents, fewer than {MIN_DOCUMENTS}: each context is a unit, and a document "
                       "spanning several contexts counts several times")


def _parts(store: Store, stages: set[str], docs: DocumentSet | None, *, step: int | None = None) -> Iterator[np.ndarray]:
    """The contexts to read, in order, in groups within one store unit committed by every one of
    ``stages`` (at most ``step`` contexts a group): all of them, or the set's."""
    done = set(store.units_done())
    for stage in stages:
        done &= set(store.units_done(stage))
    for u in sorted(done):
        contexts = np.asarray(store.grid.contexts(u), np.int64)
        if docs is not None:
            contexts = np.intersect1d(contexts, docs.contexts)
        for i in range(0, contexts.size, step or max(contexts.size, 1)):
            yield contexts[i : i + (step or contexts.size)]


def _counted(store: Store, contexts: np.ndarray, docs: DocumentSet | None) -> tuple[np.ndarray, np.ndarray]:
    """Flat slots (within ``contexts``' rows) of the document text tokens compared, and their documents."""
    flags = store.read_contexts(token_array("flags"), contexts).reshape(-1)
    doc = store.read_contexts(token_array("doc"), contexts).reshape(-1)
    keep = (flags & TEXT_ONLY) == 0
    if docs is not None:
        keep &= docs.slots(contexts).reshape(-1) >= 0
    counted = np.flatnonzero(keep)
    return counted, doc[counted].astype(np.int64)


def _code_blocks(store: Store, a: SaeInfo, b: SaeInfo, unit: str, docs: DocumentSet | None) -> Iterator[tuple[np.ndarray, ...]]:
    """Per store unit: the test unit of each counted token, and each model's (token, latent, value)
    entries of its codes (token: the counted token's index in this block)."""
    for contexts in _parts(store, {a.stage, b.stage}, docs):
        counted, doc = _counted(store, contexts, docs)
        ids = doc if unit == "document" else contexts[counted // store.meta.ctx_len]
        entries = []
        for info in (a, b):
            codes = read_codes(store, info.name, contexts)
            assert codes.idx is not None and codes.val is not None
            idx = codes.idx.reshape(-1, info.code_cap)[counted]
            on = idx >= 0
            val = codes.val.reshape(-1, info.code_cap)[counted][on]
            token = np.broadcast_to(np.arange(counted.size)[:, None], on.shape)[on]
            entries += [token, idx[on].astype(np.int64), val.astype(np.float64)]
        yield (ids, *entries)


class _Sums:
    """The running sums of a model contrast: token-level per latent, and per (unit, latent) the
    total change, finished unit by unit (a unit running on into the next block is held back)."""

    def __init__(self, d_sae: int, n_ids: int) -> None:
        self.d = d_sae
        self.fired = np.zeros((2, d_sae), np.int64)
        self.total = np.zeros((2, d_sae), np.float64)
        self.only = np.zeros((2, d_sae), np.int64)
        self.exposure = np.zeros(max(n_ids, 1), np.int64)
        self.tokens = 0
        self.held = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, ids: np.ndarray, tok_a: np.ndarray, lat_a: np.ndarray, val_a: np.ndarray, tok_b: np.ndarray,
            lat_b: np.ndarray, val_b: np.ndarray) -> None:
        if ids.size == 0:
            return
        self.tokens += ids.size
        self.exposure += np.bincount(ids, minlength=self.exposure.size)
        key_a, key_b = tok_a * self.d + lat_a, tok_b * self.d + lat_b
        for side, (lat, val, own, other) in enumerate(((lat_a, val_a, key_a, key_b), (lat_b, val_b, key_b, key_a))):
            self.fired[side] += np.bincount(lat, minlength=self.d)
            self.total[side] += np.bincount(lat, weights=val, minlength=self.d)
            self.only[side] += np.bincount(lat[~np.isin(own, other)], minlength=self.d)
        unit = np.concatenate([self.held[0], ids[tok_a], ids[tok_b]])
        lat = np.concatenate([self.held[1], lat_a, lat_b])
        change = np.concatenate([self.held[2], -val_a, val_b])
        last = unit == ids[-1]  # the block's last unit may go on in the next block
        self.held = (unit[last], lat[last], change[last])
        self.parts.append(_per_unit(unit[~last], lat[~last], change[~last], self.d))

    @property
    def units(self) -> int:
        return int(np.count_nonzero(self.exposure))

    def frame(self, level: float) -> pl.DataFrame:
        """Every latent's statistics, unranked (``abs``: |effect|, for the ranking)."""
        self.parts.append(_per_unit(*self.held, self.d))
        unit, lat, total = (np.concatenate([p[i] for p in self.parts]) for i in range(3))
        diff = total / np.maximum(self.exposure[unit], 1)  # each unit's mean change over its tokens
        n, tokens = self.units, max(self.tokens, 1)
        test = signed_rank_test(lat, diff, n_latents=self.d)
        effect = mean_difference(lat, diff, n_units=n, n_latents=self.d, level=level)
        mean_a, mean_b = self.total / tokens
        return pl.DataFrame({
            "latent": np.arange(self.d), "label": [None] * self.d,
            "rate_a": self.fired[0] / tokens, "rate_b": self.fired[1] / tokens, "mean_a": mean_a, "mean_b": mean_b,
            "change": mean_b - mean_a, "only_a": self.only[0] / tokens, "only_b": self.only[1] / tokens,
            "units_changed": np.bincount(lat[diff != 0], minlength=self.d), "effect": effect.estimate,
            "ci_low": effect.low, "ci_high": effect.high, "rank_biserial": test.effect, "p": test.p,
            "q": bh_qvalues(test.p), "abs": np.abs(effect.estimate),
        }, schema_overrides={"label": pl.String()})


def _per_unit(unit: np.ndarray, lat: np.ndarray, change: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unit, latent, total change) per pair present; pairs whose changes cancel exactly are kept
    as zeros (the signed-rank test drops them)."""
    if unit.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)
    pairs, inverse = np.unique(unit * d + lat, return_inverse=True)
    return pairs // d, pairs % d, np.bincount(inverse, weights=change)


def site_movement(store: Store, a: str, b: str, *, where: Where | None = None) -> pl.DataFrame:
    """How far each site moves from model ``a`` to model ``b`` on the same tokens (document text
    of the documents ``where`` matches), for every site both store activations of
    (:data:`SITES_SCHEMA`, in forward order)."""
    _check_models(store, a, b)
    docs = _documents(store, where)
    stored = {s.name: s for s in store.meta.sites if s.stored}
    bare = sorted({split_site(n)[1] for n in stored if site_for(split_site(n)[1], a) in stored
                   and site_for(split_site(n)[1], b) in stored}, key=parse_site)
    rows = []
    for site in bare:
        sa, sb = stored[site_for(site, a)], stored[site_for(site, b)]
        sums = np.zeros(5)  # tokens, sum of rel_l2, cosine, |a|, |b|
        step = max(1, SITE_BLOCK_BYTES // (store.meta.ctx_len * sa.d * 8))
        for contexts in _parts(store, {sa.stage, sb.stage}, docs, step=step):
            sums += _movement(store, sa.name, sb.name, contexts, docs)
        count = max(sums[0], 1)
        rows.append({"site": site, "layer": parse_site(site).layer, "tokens": int(sums[0]), "rel_l2": sums[1] / count,
                     "cosine": sums[2] / count, "norm_a": sums[3] / count, "norm_b": sums[4] / count})
    return pl.DataFrame(rows, schema=SITES_SCHEMA)


def _movement(store: Store, site_a: str, site_b: str, contexts: np.ndarray, docs: DocumentSet | None) -> np.ndarray:
    """Sums over the counted tokens of ``contexts`` with a non-zero activation in A: (tokens,
    ||b - a|| / ||a||, cos(a, b), ||a||, ||b||)."""
    counted, _ = _counted(store, contexts, docs)
    xa = store.read_contexts(activation_array(site_a), contexts)
    xa = xa.reshape(-1, xa.shape[-1])[counted].astype(np.float64)
    xb = store.read_contexts(activation_array(site_b), contexts)
    xb = xb.reshape(-1, xb.shape[-1])[counted].astype(np.float64)
    na, nb = np.linalg.norm(xa, axis=1), np.linalg.norm(xb, axis=1)
    keep = na > 0
    na, nb, xa, xb = na[keep], nb[keep], xa[keep], xb[keep]
    rel = np.linalg.norm(xb - xa, axis=1) / na
    cos = np.einsum("td,td->t", xa, xb) / np.maximum(na * nb, 1e-300)
    return np.array([na.size, rel.sum(), cos.sum(), na.sum(), nb.sum()])
