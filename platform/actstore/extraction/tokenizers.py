"""A further model reads the store's token ids: refuse one whose tokenizer gives them other meanings.

Model diffing runs a second model (``models:`` in the extraction config) over the tokens the
store already holds. That is only meaningful when both models' tokenizers map every id to the
same piece (``google/gemma-2-2b`` and ``google/gemma-2-2b-it`` do), so the vocabularies, merge
rules and added tokens are compared (not the names) before any work.
"""

from __future__ import annotations

from actstore.config import ExtractConfig, HFSource
from actstore.corpus.tokenize import load_tokenizer, source_tokenizer, tokenizer_json
from actstore.errors import TokenizerError
from actstore.store._fs import Location
from actstore.store.store import Store
from actstore.store.tokenizer import read_tokenizer, tokenizer_difference

__all__ = ["refuse_other_tokenizers"]


def refuse_other_tokenizers(config: ExtractConfig, location: Location) -> None:
    """Raise :class:`TokenizerError` (one line) when a model of ``config.models`` does not share the
    tokenizer of the store at ``location`` (of the configured ingestion when there is no store yet)."""
    if not config.models:
        return
    reference = _store_tokenizer(location)
    if reference is None:
        reference = tokenizer_json(load_tokenizer(config.ingest_config().tokenizer))
    for tag, source in config.models.items():
        difference = tokenizer_difference(reference, tokenizer_json(load_tokenizer(source)))
        if difference is not None:
            name = source.id or source.package or source.gguf_file
            raise TokenizerError(f"model {tag!r} ({name}) does not share the store's tokenizer ({difference}); a further "
                                 "model reads the stored token ids, which must mean the same to both models")


def _store_tokenizer(location: Location) -> str | None:
    """The ``tokenizer.json`` text the store's tokens were made with (None: no store yet)."""
    if not Store.exists(location):
        return None
    store = Store.open(location.url, storage_options=location.storage_options)
    info = store.meta.tokenizer
    if info.file is None:  # format v1: the tokenizer from its recorded source
        return str(source_tokenizer(HFSource(**info.source)).backend.to_str())
    return str(read_tokenizer(store.files, info).backend.to_str())
