"""The store as :func:`actstore.open` returns it: the storage layer's :class:`~actstore.store.store.Store`
plus the calls researchers reach for first (``sae``, ``find_tokens``, ``loader``).

They live here, above ``query/`` and ``loader/``, so that ``store/`` at the bottom imports
nothing above it; each is a one-line wrapper over the layer that implements it. The imports
are deferred so that ``import actstore`` stays light (no polars query code, no torch).

>>> import actstore
>>> store = actstore.open("runs/demo")  # doctest: +SKIP
>>> store.sae("topk-2048").top_k(1444, k=5)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actstore.store import store as _storage
from actstore.store.store import Mode

if TYPE_CHECKING:
    import polars as pl

    from actstore.contrast.documents import Unit
    from actstore.latents import Latents
    from actstore.loader.activations import ActivationLoader
    from actstore.query.filters import DocumentSet, Where
    from actstore.query.tokens import TextMatches
    from actstore.store_contrast import StoreContrast

__all__ = ["Store", "open_store"]


class Store(_storage.Store):
    """A store with the query and loader calls. Everything else is the storage layer's."""

    def sae(self, name: str) -> Latents:
        """The latents of SAE ``name``: top-k contexts, occurrences, density, co-firing, labels,
        explanations and search (polars)."""
        from actstore.latents import Latents

        return Latents(self, name)

    def search(self, text: str, *, top: int = 20, by_example: bool = False, saes: list[str] | None = None) -> pl.DataFrame:
        """Latents of every SAE (or of ``saes``) found by ``text`` in one ranked list with an ``sae``
        column: by their explanations (BM25 over all SAEs' explanations) or ``by_example``."""
        from actstore.store_search import search_store

        return search_store(self, text, top=top, by_example=by_example, saes=saes)

    def contrast(self, a: Where, b: Where | None = None, *, saes: list[str] | None = None, unit: Unit = "auto",
                 prior: float = 1.0, level: float = 0.95) -> StoreContrast:
        """Which latents of every SAE (or of ``saes``) fire more in the documents ``a`` matches than
        in those ``b`` matches (default: all others): each SAE's contrast in one list with an
        ``sae`` column, ranked by p, q over every latent tested (:mod:`actstore.store_contrast`)."""
        from actstore.store_contrast import contrast_store

        return contrast_store(self, a, b, saes=saes, unit=unit, prior=prior, level=level)

    def find_tokens(self, sequence: str | list[int], *, limit: int | None = 100, window: int = 16,
                    where: Where | None = None) -> pl.DataFrame:
        """Stored places of a token sequence (text or ids), with token windows (polars); ``where``:
        a document filter (polars expression or SQL WHERE clause over ``documents()``' columns)."""
        from actstore.query.tokens import find_tokens

        return find_tokens(self, sequence, limit=limit, window=window, where=where)

    def find_text(self, text: str, *, limit: int | None = 100, window: int = 16,
                  where: Where | None = None) -> TextMatches:
        """Stored places of ``text`` as typed and word-initial, all counted (a ``TextMatches``)."""
        from actstore.query.tokens import find_text

        return find_text(self, text, limit=limit, window=window, where=where)

    def select_documents(self, where: Where) -> DocumentSet:
        """The documents a filter matches, placed on the token axis: pass it as ``where=`` to many
        queries to resolve the filter once."""
        from actstore.query.filters import resolve_where

        found = resolve_where(self, where)
        assert found is not None
        return found

    def loader(self, site: str, *, batch_size: int, **options: Any) -> ActivationLoader:
        """Shuffled, rank-sharded, resumable batches of a site's activations (torch tensors).

        ``options`` are :class:`actstore.loader.activations.ActivationLoader`'s (shuffle, seed,
        rank, world_size, dtype, drop_special, mix_chunks, chunk_contexts, scale, with_index,
        even_ranks); an unknown one is a TypeError."""
        from actstore.loader.activations import ActivationLoader

        return ActivationLoader(self, site, batch_size=batch_size, **options)


def open_store(url: str, *, storage_options: dict[str, Any] | None = None, mode: Mode = "r") -> Store:
    """Open an existing store. ``mode="r"`` (default) is read-only."""
    return Store.open(url, storage_options=storage_options, mode=mode)
