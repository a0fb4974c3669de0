"""``store.sae(name)``: the latents of one SAE, queried through its feature-major index, its
token-major codes and its statistics. Results are polars DataFrames with fixed columns.

Every query leaves out BOS, padding and special tokens inside documents (chat-template markers):
the index never holds them, span reads filter them by flag, windows show document tokens only.
Queries read only committed units, so they also run on a store being written.

Every query takes ``where=``: a document filter (a polars expression over ``store.documents()``
columns, a SQL WHERE clause, or a resolved :class:`~actstore.query.filters.DocumentSet`), and
then answers over the matching documents' tokens only. A filtered query about one latent reads
whichever is smaller: the latent's posting list, filtered by arithmetic on the token index, or
the set's token-major codes (``ctx_len x code_cap`` entries per context of the set); a
filtered statistic (``density``, ``cofiring``'s counts) reads the set's codes. Either way its
cost follows the matching documents' tokens, not the store's.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Literal

import numpy as np
import polars as pl

from actstore.errors import ConfigError, IndexNotFoundError
from actstore.index.layout import INDEX_ATTRIBUTE, IndexPlan, bucket_array, index_group
from actstore.index.postings import read_postings
from actstore.query.cofiring import cofiring_sample
from actstore.query.filters import DocumentSet, Where, resolve_where
from actstore.query.logits import output_logits
from actstore.query.scan import scan_codes, set_totals
from actstore.query.windows import WINDOW_SCHEMA, decode_tokens, windows
from actstore.store.codes import read_codes
from actstore.store.layout import NOT_TEXT, token_array
from actstore.store.stats import HIST_EDGES, current_totals

if TYPE_CHECKING:
    from actstore.store.store import Store

__all__ = ["COFIRING_SCHEMA", "DENSITY_SCHEMA", "OCCURRENCE_SCHEMA", "SPAN_SCHEMA", "SaeLatents"]

POSTINGS_CACHE = 4  # latents whose whole posting lists a SaeLatents keeps (by value and by token)
FIRST_BLOCK = 1024  # postings a filtered top-k reads first (then 4x more each time)
OCCURRENCE_SCHEMA = pl.Schema({"latent": pl.Int64(), "rank": pl.Int64(), "token": pl.Int64(), "ctx": pl.Int64(), "pos": pl.Int32(),
                     "value": pl.Float32()})
DENSITY_SCHEMA = pl.Schema({"latent": pl.Int64(), "count": pl.Int64(), "density": pl.Float64(), "mean": pl.Float64(),
                  "max": pl.Float32(), "hist": pl.List(pl.Int64())})
SPAN_SCHEMA = pl.Schema({"latent": pl.Int64(), "value": pl.Float64(), "tokens_fired": pl.Int64(), "density": pl.Float64()})
COFIRING_SCHEMA = pl.Schema({"latent": pl.Int64(), "together": pl.Int64(), "count": pl.Int64(), "jaccard": pl.Float64()})


class SaeLatents:
    """The latents of one SAE in a store, as the index, codes and statistics answer: the query
    layer. ``store.sae(name)`` gives :class:`actstore.latents.Latents`, which adds labels,
    explanations and search on top (they live above both ``query/`` and ``explain/``)."""

    def __init__(self, store: Store, name: str) -> None:
        info = next((s for s in store.meta.saes if s.name == name), None)
        if info is None:
            raise ConfigError(f"the store at {store.location.url!r} has no SAE {name!r}; it has "
                              f"{[s.name for s in store.meta.saes] or 'none'}")
        self.store, self.name, self.info = store, name, info
        self._plan: IndexPlan | None = None
        self._offsets: dict[int, np.ndarray] = {}
        self._by_token: dict[Hashable, tuple[np.ndarray, np.ndarray]] = {}  # a few latents' postings by token
        self._all: dict[Hashable, tuple[np.ndarray, np.ndarray]] = {}  # and by value
        self._sets: dict[str, DocumentSet] = {}  # SQL filters resolved, the last few

    def __repr__(self) -> str:
        return f"<actstore.SaeLatents {self.name!r} d_sae={self.info.d_sae} site={self.info.site!r}>"

    # -- the index ---------------------------------------------------------------------------
    @property
    def index(self) -> IndexPlan:
        """The plan of the complete index; :class:`IndexNotFoundError` when there is none."""
        if self._plan is None:
            try:
                raw = self.store.group[index_group(self.name)].attrs.get(INDEX_ATTRIBUTE)
            except KeyError:
                raw = None
            plan = None if raw is None else IndexPlan.model_validate(raw)
            if plan is None or not plan.complete:
                raise IndexNotFoundError(
                    f"SAE {self.name!r} of {self.store.location.url!r} has no complete index: "
                    f"run `actstore index {self.store.location.url} --sae {self.name}`")
            self._plan = plan
        return self._plan

    def _check_latent(self, latent: int) -> int:
        if not 0 <= latent < self.info.d_sae:
            raise ConfigError(f"latent {latent} is out of range for SAE {self.name!r} (d_sae={self.info.d_sae})")
        return int(latent)

    def _bounds(self, latent: int) -> tuple[int, int, int]:
        """(bucket, start, stop) of a latent's run in its bucket's arrays."""
        plan = self.index
        bucket = self._check_latent(latent) // plan.latents_per_bucket
        if bucket not in self._offsets:
            self._offsets[bucket] = np.asarray(self.store.array(bucket_array(self.name, bucket, "offsets"))[...])
        off = self._offsets[bucket]
        i = latent - bucket * plan.latents_per_bucket
        return bucket, int(off[i]), int(off[i + 1])

    def counts(self) -> np.ndarray:
        """Occurrences of every latent in the index ([d_sae] int64)."""
        plan = self.index
        for b in range(plan.n_buckets):
            if b not in self._offsets:
                self._offsets[b] = np.asarray(self.store.array(bucket_array(self.name, b, "offsets"))[...])
        return np.concatenate([np.diff(self._offsets[b]) for b in range(plan.n_buckets)])

    def postings(self, latent: int, *, limit: int | None = None, min_value: float | None = None,
                 skip: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(flat token index, value as float32) of a latent's occurrences, value descending,
        leaving out the first ``skip``."""
        bucket, start, stop = self._bounds(latent)
        first = max(int(skip), 0)
        last = stop - start if limit is None else first + max(int(limit), 0)
        return read_postings(self.store, self.index, bucket, (start, stop), (first, last), min_value)

    def all_postings(self, latent: int, *, where: Where | None = None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`postings` of every occurrence (value descending), in the documents ``where``
        matches when given, the last few latents asked for kept (read-only): a feature page's
        quantile groups and windows read a posting list once."""
        docs = self.select_documents(where)
        if docs is None:
            return _kept(self._all, latent, lambda: self.postings(latent))
        return _kept(self._all, (latent, docs.key), lambda: self._postings_in(latent, docs))

    def postings_by_token(self, latent: int, *, where: Where | None = None) -> tuple[np.ndarray, np.ndarray]:
        """A latent's postings ordered by flat token index (for windows to look values up in),
        kept like :meth:`all_postings`."""
        docs = self.select_documents(where)

        def by_token() -> tuple[np.ndarray, np.ndarray]:
            tokens, values = self.all_postings(latent, where=docs)
            order = np.argsort(tokens, kind="stable")
            return tokens[order], values[order]

        return _kept(self._by_token, latent if docs is None else (latent, docs.key), by_token)

    def select_documents(self, where: Where | None) -> DocumentSet | None:
        """The documents a filter matches (None: no filter), SQL filters resolved once per object."""
        if not isinstance(where, str):
            return resolve_where(self.store, where)
        found = self._sets.get(where)
        if found is None:
            found = resolve_where(self.store, where)
            assert found is not None
            while len(self._sets) >= POSTINGS_CACHE:
                self._sets.pop(next(iter(self._sets)), None)
            self._sets[where] = found
        return found

    def _postings_in(self, latent: int, docs: DocumentSet) -> tuple[np.ndarray, np.ndarray]:
        """A latent's occurrences in a document set, value descending (ties by token, as the index
        orders them), from whichever read is smaller: its whole posting list, kept where the
        document of each token (arithmetic on the index) is in the set, or the set's codes."""
        _, start, stop = self._bounds(latent)
        if stop - start > docs.contexts.size * self.store.meta.ctx_len * self.info.code_cap:
            return self._scan_postings(latent, docs)
        tokens, values = self.postings(latent)
        keep = docs.contains(tokens)
        return tokens[keep], values[keep]

    def _first_in(self, latent: int, docs: DocumentSet,
                  enough: Callable[[np.ndarray, np.ndarray, float], bool]) -> tuple[np.ndarray, np.ndarray]:
        """The latent's strongest occurrences in a set, read from its posting list in growing
        blocks (filtered by arithmetic) until ``enough(tokens, values, last value read)``: a top
        20 in a set of a tenth of the documents reads ~200 postings, not the list. Past the
        set's scan cost, or at the end of the list, it is :meth:`all_postings` in the set."""
        _, start, stop = self._bounds(latent)
        scan = docs.contexts.size * self.store.meta.ctx_len * self.info.code_cap
        found_t: list[np.ndarray] = []
        found_v: list[np.ndarray] = []
        read, block = 0, FIRST_BLOCK
        while read < min(stop - start, scan):
            tokens, values = self.postings(latent, skip=read, limit=block)
            keep = docs.contains(tokens)
            found_t.append(tokens[keep])
            found_v.append(values[keep])
            read, block = read + tokens.size, block * 4
            if enough(np.concatenate(found_t), np.concatenate(found_v), float(values[-1])):
                return np.concatenate(found_t), np.concatenate(found_v)
        return self.all_postings(latent, where=docs)

    def _scan_postings(self, latent: int, docs: DocumentSet) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_postings_in` from the set's token-major codes."""
        found_t, found_v = [], []
        for block in scan_codes(self.store, self.name, docs):
            assert block.val is not None
            row, col = np.nonzero(block.idx == latent)
            found_t.append(block.flat[row])
            found_v.append(block.val[row, col])
        tokens = np.concatenate(found_t) if found_t else np.zeros(0, np.int64)
        values = np.concatenate(found_v) if found_v else np.zeros(0, np.float32)
        order = np.lexsort((tokens, -values))
        return tokens[order], values[order]

    # -- occurrences and examples ------------------------------------------------------------
    def occurrences(self, latent: int, *, min_value: float | None = None, limit: int | None = None,
                    where: Where | None = None) -> pl.DataFrame:
        """Every occurrence of ``latent`` (at least ``min_value``, at most ``limit``), value descending."""
        docs = self.select_documents(where)
        if docs is None:
            tokens, values = self.postings(latent, limit=limit, min_value=min_value)
        else:
            low = -np.inf if min_value is None else np.float32(min_value)
            tokens, values = self._first_in(latent, docs, lambda t, v, last: (limit is not None and t.size >= limit) or bool(last < low))
            cut = values.size if min_value is None else int(np.searchsorted(-values, -np.float32(min_value), side="right"))
            tokens, values = tokens[:cut][:limit], values[:cut][:limit]
        return _occurrence_frame(latent, tokens, values, self.store.meta.ctx_len)

    def top_k(self, latent: int, *, k: int = 20, window: int = 16, per_doc: int | None = None,
              where: Where | None = None) -> pl.DataFrame:
        """The ``k`` highest occurrences with their token windows (the true top k), or at most
        ``per_doc`` per document. Columns: rank, doc, ctx, pos, value, tokens, token_ids, values
        (this latent on every window token), focus (index of the firing token in ``tokens``)."""
        if k < 1 or window < 0 or (per_doc is not None and per_doc < 1):
            raise ConfigError(f"top_k needs k >= 1, window >= 0 and per_doc >= 1 or None; got {k}, {window}, {per_doc}")
        docs = self.select_documents(where)
        chosen_t, chosen_v = self._spread(latent, k, per_doc) if docs is None else self._spread_in(latent, k, per_doc, docs)
        frame = windows(self.store, chosen_t, window=window, values=chosen_v,
                        occurrences=self.postings_by_token(latent, where=docs))
        return frame.with_columns(rank=pl.int_range(pl.len(), dtype=pl.Int64)).select(["rank", *WINDOW_SCHEMA])

    def _spread(self, latent: int, k: int, per_doc: int | None) -> tuple[np.ndarray, np.ndarray]:
        """The first ``k`` occurrences keeping at most ``per_doc`` per document, reading the
        postings in growing blocks (a dense latent is never read whole for a top 20)."""
        _, start, stop = self._bounds(latent)
        if per_doc is None:
            return self.postings(latent, limit=k)
        taken_t: list[int] = []
        taken_v: list[float] = []
        per: dict[int, int] = {}
        read, block = 0, 4 * k
        while len(taken_t) < k and read < stop - start:
            tokens, values = self.postings(latent, skip=read, limit=block)  # only the new block
            docs = self._docs_of(tokens)
            for t, v, d in zip(tokens.tolist(), values.tolist(), docs.tolist(), strict=True):
                if per.get(d, 0) < per_doc:
                    per[d] = per.get(d, 0) + 1
                    taken_t.append(t)
                    taken_v.append(v)
                    if len(taken_t) == k:
                        break
            read += tokens.size
            block *= 4
        return np.asarray(taken_t, np.int64), np.asarray(taken_v, np.float32)

    def _spread_in(self, latent: int, k: int, per_doc: int | None, docs: DocumentSet) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_spread` within a document set: its occurrences there, the first ``per_doc`` of each document."""
        def spread(tokens: np.ndarray) -> np.ndarray:
            if per_doc is None:
                return np.ones(tokens.size, bool)
            doc = docs.layout.doc_of(tokens)
            order = np.argsort(doc, kind="stable")  # each document's occurrences together, value descending
            first = np.flatnonzero(np.r_[True, np.diff(doc[order]) != 0])
            nth = np.arange(order.size) - np.repeat(first, np.diff(np.r_[first, order.size]))
            keep = np.zeros(tokens.size, bool)
            keep[order[nth < per_doc]] = True
            return keep

        tokens, values = self._first_in(latent, docs, lambda t, v, last: int(spread(t).sum()) >= k)
        keep = spread(tokens)
        return tokens[keep][:k], values[keep][:k]

    def _docs_of(self, tokens: np.ndarray) -> np.ndarray:
        ctx_len = self.store.meta.ctx_len
        ctxs, inverse = np.unique(tokens // ctx_len, return_inverse=True)
        doc = self.store.read_contexts(token_array("doc"), ctxs)
        return np.asarray(doc[inverse, tokens % ctx_len])

    def quantile_examples(self, latent: int, *, bins: int = 10, per_bin: int = 5, kind: Literal["count", "width"] = "count",
                          window: int = 16, seed: int = 0, where: Where | None = None) -> pl.DataFrame:
        """Examples sampled from activation bins, lowest bin first.

        ``kind="count"``: equal-count bins (each holds the same number of occurrences, up to
        one); ``kind="width"``: equal-width bins over [min, max] of the latent's values.
        Columns: bin, bin_min, bin_max, bin_count, then the window columns of :meth:`top_k`.
        """
        if kind not in ("count", "width"):
            raise ConfigError(f"kind must be 'count' or 'width', got {kind!r}")
        if bins < 1 or per_bin < 1:
            raise ConfigError(f"bins and per_bin must be >= 1, got {bins}, {per_bin}")
        docs = self.select_documents(where)
        tokens, values = self.all_postings(latent, where=docs)
        tokens, values = tokens[::-1], values[::-1]  # ascending value
        n = values.size
        if kind == "count":
            which = (np.arange(n) * bins) // max(n, 1)
        else:
            edges = np.linspace(values[0], values[-1], bins + 1) if n else np.zeros(bins + 1)
            which = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, bins - 1)
        rng = np.random.default_rng(seed)
        picks, meta = [], []
        for b in range(bins):
            members = np.flatnonzero(which == b)
            if members.size == 0:
                continue
            chosen = np.sort(rng.choice(members, size=min(per_bin, members.size), replace=False))
            picks.append(chosen)
            meta += [(b, float(values[members[0]]), float(values[members[-1]]), int(members.size))] * chosen.size
        chosen = np.concatenate(picks) if picks else np.zeros(0, np.int64)
        frame = windows(self.store, tokens[chosen], window=window, values=values[chosen],
                        occurrences=self.postings_by_token(latent, where=docs))
        bin_cols = pl.DataFrame(meta, schema={"bin": pl.Int32, "bin_min": pl.Float32, "bin_max": pl.Float32,
                                              "bin_count": pl.Int64}, orient="row")
        return pl.concat([bin_cols, frame], how="horizontal")

    # -- statistics --------------------------------------------------------------------------
    def density(self, latent: int | None = None, *, where: Where | None = None) -> pl.DataFrame:
        """Per latent: count (tokens fired), density (fraction of counted tokens), mean and max of
        its non-zero values, and ``hist``: counts on the bins of ``actstore.store.stats.HIST_EDGES``.
        From the merged statistics once extraction is finalized, else summed over committed units;
        with ``where``, computed over the matching documents' codes (a scan of the set)."""
        rows = slice(None) if latent is None else slice(self._check_latent(latent), latent + 1)
        docs = self.select_documents(where)
        stats = (current_totals(self.store, "saes", self.name, ("tokens", "fired", "sum", "max", "hist"), self.info.stage, rows)
                 if docs is None else set_totals(self.store, self.name, self.info.d_sae, docs))
        if docs is not None:
            stats = {n: v if n == "tokens" else v[rows] for n, v in stats.items()}
        tokens = max(int(stats["tokens"].reshape(-1)[0]), 1)
        fired = stats["fired"].astype(np.int64)
        return pl.DataFrame({
            "latent": np.arange(self.info.d_sae)[rows], "count": fired,
            "density": fired / tokens, "mean": stats["sum"] / np.maximum(fired, 1),
            "max": stats["max"].astype(np.float32), "hist": stats["hist"].astype(np.int64),
        }).with_columns(pl.col("hist").arr.to_list()).cast(DENSITY_SCHEMA)

    def l0_hist(self) -> np.ndarray:
        """Tokens by L0 (number of latents firing on a token), BOS and padding left out; the
        last bin counts L0 >= ``L0_BINS - 1``. Same sources as :meth:`density`."""
        return self._stats(("l0_hist",))["l0_hist"].astype(np.int64)

    def _stats(self, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        return current_totals(self.store, "saes", self.name, names, self.info.stage)

    hist_edges = HIST_EDGES

    def logits(self, latent: int) -> pl.DataFrame:
        """The top and bottom 10 tokens of ``W_dec[latent] @ W_U``, kept in the store by
        ``actstore logits`` (:class:`LogitsNotFoundError` before). Columns: side, rank, token_id, token, value."""
        return output_logits(self.store, self.name, self._check_latent(latent))

    # -- what fires where --------------------------------------------------------------------
    def features_at(self, *, ctx: int | None = None, doc: int | None = None, span: tuple[int, int] | None = None,
                    agg: Literal["max", "sum"] = "max", top: int = 20, max_density: float | None = None,
                    where: Where | None = None) -> pl.DataFrame:
        """Latents firing on a stored span, ranked by ``agg`` of their values over its tokens.

        Give ``ctx`` (span = positions in the context) or ``doc`` (span = token offsets in the
        document as stored). ``max_density`` drops latents firing on more than that fraction
        of tokens (the always-on ones). ``where`` keeps the span's tokens of matching documents
        (``density`` stays the store's). Columns: latent, value, tokens_fired, density.
        """
        if agg not in ("max", "sum"):
            raise ConfigError(f"agg must be 'max' or 'sum', got {agg!r}")
        docs = self.select_documents(where)
        flat = _span_tokens(self.store, ctx=ctx, doc=doc, span=span)
        flat = flat if docs is None else flat[docs.contains(flat)]
        idx, val = self._codes_at(flat), self._codes_at(flat, "val")
        keep = idx >= 0
        frame = pl.DataFrame({"latent": idx[keep].astype(np.int64), "v": val[keep].astype(np.float64)})
        ranked = frame.group_by("latent").agg(value=getattr(pl.col("v"), agg)(), tokens_fired=pl.len().cast(pl.Int64))
        density = self.density().select("latent", "density")
        out = ranked.join(density, on="latent", how="left")
        if max_density is not None:
            out = out.filter(pl.col("density") <= max_density)
        return out.sort(["value", "latent"], descending=[True, False]).head(top).cast(SPAN_SCHEMA)

    def text_at(self, *, ctx: int | None = None, doc: int | None = None, span: tuple[int, int] | None = None) -> str:
        """The text of the span :meth:`features_at` reads (same arguments), so a reader sees what it describes."""
        flat = _span_tokens(self.store, ctx=ctx, doc=doc, span=span)
        ctx_len = self.store.meta.ctx_len
        ctxs, inverse = np.unique(flat // ctx_len, return_inverse=True)
        ids = self.store.read_contexts(token_array("ids"), ctxs)[inverse, flat % ctx_len]
        return "".join(decode_tokens(self.store, ids.tolist())) if ids.size else ""

    def _codes_at(self, flat: np.ndarray, part: str = "idx") -> np.ndarray:
        """One code array (``idx`` [n, cap], or ``val`` as float32) at flat token indices."""
        ctx_len = self.store.meta.ctx_len
        ctxs, inverse = np.unique(flat // ctx_len, return_inverse=True)
        rows = read_codes(self.store, self.name, ctxs, ids=part == "idx", values=part == "val")[part == "val"]
        assert rows is not None
        picked = rows[inverse, flat % ctx_len]
        return picked if part == "idx" else picked.astype(np.float32)

    def cofiring(self, latent: int, *, top: int = 20, limit: int | None = None, max_rows: int | None = None,
                 block: int = 4096, where: Where | None = None) -> pl.DataFrame:
        """Latents that fire on the same tokens as ``latent``, ranked by Jaccard then count.

        The intersection with every other posting list is counted from the token-major codes of
        ``latent``'s own tokens (its posting list, read in blocks), so cost grows with its
        occurrences, never with d_sae squared. Exact by default. ``limit``: A is only its
        ``limit`` strongest occurrences. ``max_rows``: a budget of code rows to read; when A's
        occurrences lie in more code chunks, they are counted in a seeded sample of whole chunks
        and ``together`` is scaled up by A's share in it (:func:`actstore.query.cofiring.cofiring_sample`
        says which). With ``where``, A and B are their occurrences in the matching documents (the
        counts of B from a scan of the set's codes). Columns: latent, together (|A and B|), count
        (|B|), jaccard (|A and B| / |A or B|).
        """
        docs = self.select_documents(where)
        if docs is not None:
            tokens = self.all_postings(latent, where=docs)[0][:limit]
        else:
            tokens = self.all_postings(latent)[0] if limit is None else self.postings(latent, limit=limit)[0]
        sample = cofiring_sample(self, tokens, max_rows=max_rows)
        together = np.zeros(self.info.d_sae, np.int64)
        for i in range(0, sample.tokens.size, block):
            idx = self._codes_at(sample.tokens[i : i + block])  # the latent ids only: half the bytes to decode
            together += np.bincount(idx[idx >= 0], minlength=self.info.d_sae)
        together[latent] = 0
        if not sample.exact:
            together = np.rint(together * (sample.occurrences / sample.tokens.size)).astype(np.int64)
        counts = self.counts() if docs is None else self.density(where=docs)["count"].to_numpy()
        union = sample.occurrences + counts - together
        frame = pl.DataFrame({"latent": np.arange(self.info.d_sae), "together": together, "count": counts,
                              "jaccard": together / np.maximum(union, 1)})
        return (frame.filter(pl.col("together") > 0).sort(["jaccard", "together", "latent"], descending=[True, True, False])
                .head(top).cast(COFIRING_SCHEMA))


def _occurrence_frame(latent: int, tokens: np.ndarray, values: np.ndarray, ctx_len: int) -> pl.DataFrame:
    return pl.DataFrame({"latent": np.full(tokens.size, latent, np.int64), "rank": np.arange(tokens.size), "token": tokens,
                         "ctx": tokens // ctx_len, "pos": (tokens % ctx_len).astype(np.int32), "value": values}).cast(OCCURRENCE_SCHEMA)


def _span_tokens(store: Store, *, ctx: int | None, doc: int | None, span: tuple[int, int] | None) -> np.ndarray:
    """Flat indices of a context's or document's counted tokens, cut to ``span`` when given."""
    if (ctx is None) == (doc is None):
        raise ConfigError("give exactly one of ctx= or doc=")
    flat = _doc_tokens(store, doc) if doc is not None else _ctx_tokens(store, int(ctx or 0))
    return flat if span is None else flat[span[0] : span[1]]


def _ctx_tokens(store: Store, ctx: int) -> np.ndarray:
    """Flat indices of a context's counted tokens (BOS, padding and specials left out)."""
    if not 0 <= ctx < store.meta.n_ctx:
        raise ConfigError(f"context {ctx} is out of range [0, {store.meta.n_ctx})")
    flags = store.read(token_array("flags"), slice(ctx, ctx + 1))[0]
    return ctx * store.meta.ctx_len + np.flatnonzero((flags & NOT_TEXT) == 0)


def _doc_tokens(store: Store, doc: int) -> np.ndarray:
    """Flat indices of a document's stored tokens, in order (a document may span contexts).

    Contexts hold documents in increasing order, so a binary search over contexts finds the first.
    """
    n_ctx, ctx_len = store.meta.n_ctx, store.meta.ctx_len
    if not 0 <= doc < store.meta.ingest.n_documents:
        raise ConfigError(f"document {doc} is out of range [0, {store.meta.ingest.n_documents})")
    lo, hi = 0, n_ctx
    while lo < hi:  # first context whose largest doc id is >= doc
        mid = (lo + hi) // 2
        if store.read(token_array("doc"), mid).max() >= doc:
            hi = mid
        else:
            lo = mid + 1
    out = []
    for ctx in range(lo, n_ctx):
        docs = store.read(token_array("doc"), slice(ctx, ctx + 1))[0]
        flags = store.read(token_array("flags"), slice(ctx, ctx + 1))[0]
        at = np.flatnonzero((docs == doc) & ((flags & NOT_TEXT) == 0))
        if at.size == 0:
            break
        out.append(ctx * ctx_len + at)
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def _kept(cache: dict[Hashable, tuple[np.ndarray, np.ndarray]], latent: Hashable,
          read: Callable[[], tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """``cache[latent]`` (a latent, or a latent and a document set's key), read (and made read-only: every caller shares it) when missing; the
    cache keeps the last :data:`POSTINGS_CACHE` latents."""
    found = cache.get(latent)
    if found is None:
        found = read()
        for part in found:
            part.flags.writeable = False
        for oldest in list(cache)[: max(len(cache) - POSTINGS_CACHE + 1, 0)]:  # list(): atomic when threads share it
            cache.pop(oldest, None)
        cache[latent] = found
    return found
