"""``actstore upgrade STORE``: bring a store written in an older format version to the current one.

Version 1 to 2 stores the tokenizer inside the store: it is loaded once more from the source the
store recorded (so that source must be reachable here, this one time), checked against the
special ids and vocabulary size the store recorded, and written to ``tokenizer/tokenizer.json``;
the root metadata then names the file and says version 2. Nothing else changes. Run it while no
job writes the store: the root metadata is rewritten.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from actstore.config import HFSource
from actstore.corpus.tokenize import load_tokenizer, tokenizer_info, tokenizer_json
from actstore.errors import StoreMismatchError
from actstore.store.metadata import FORMAT_VERSION
from actstore.store.store import Store
from actstore.store.tokenizer import write_tokenizer

__all__ = ["UpgradeResult", "upgrade_store"]

# fields of the recorded tokenizer that the reloaded one must match
_SAME = ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id")


class UpgradeResult(NamedTuple):
    """What :func:`upgrade_store` did."""

    url: str
    from_version: int
    to_version: int


def upgrade_store(url: str, *, storage_options: dict[str, Any] | None = None) -> UpgradeResult:
    """Upgrade the store at ``url`` in place to :data:`~actstore.store.metadata.FORMAT_VERSION`
    (a store already there is left alone)."""
    store = Store.open(url, storage_options=storage_options, mode="r+")
    before = store.meta.format_version
    if before < 2:
        _store_tokenizer(store)  # version 1 -> 2
    assert store.meta.format_version == FORMAT_VERSION, "an upgrade step is missing"
    return UpgradeResult(url, before, store.meta.format_version)


def _store_tokenizer(store: Store) -> None:
    recorded = store.meta.tokenizer
    tokenizer = load_tokenizer(HFSource(**recorded.source))
    fresh = tokenizer_info(tokenizer, HFSource(**recorded.source))
    differences = [f"{k}: store has {getattr(recorded, k)}, the source now {getattr(fresh, k)}"
                   for k in _SAME if getattr(recorded, k) != getattr(fresh, k)]
    if differences:
        raise StoreMismatchError(
            f"the tokenizer at the recorded source {recorded.name_or_path!r} is not the one that made "
            f"{store.location.url!r}: {'; '.join(differences)}. The store was left as it was."
        )
    write_tokenizer(store.files, tokenizer_json(tokenizer))  # before the metadata that names it
    store.update_meta(tokenizer=fresh, format_version=2)
