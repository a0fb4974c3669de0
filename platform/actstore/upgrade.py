"""``actstore upgrade STORE``: bring a store written in an older format version to the current one.

Version 1 to 2 stores the tokenizer inside the store: it is loaded once more from the source the
store recorded (so that source must be reachable here, this one time), checked against the
special ids and vocabulary size the store recorded, and written to ``tokenizer/tokenizer.json``;
the root metadata then names the file and says version 2.

Version 2 to 3 records where each SAE is: an SAE whose recorded path is found here (as given,
or relative to the folder the store was made from) and holds the recorded sha256 is recorded
as local, its files copied into the store when small (``saes/<name>/``); a path not found is
kept as it was (``origin`` stays unset: loading tries it as before) and named in the result's
notes, and a later ``actstore upgrade`` run where the files are records it. Nothing else
changes. Run it while no job writes the store: the root metadata is rewritten.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from actstore.config import HFSource
from actstore.corpus.tokenize import load_tokenizer, tokenizer_info, tokenizer_json
from actstore.errors import StoreMismatchError
from actstore.saes.formats import load_sae
from actstore.store.metadata import FORMAT_VERSION
from actstore.store.sae_files import SAE_FILES_VERSION, legacy_sae_path, placement, record_sae_files
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
    notes: tuple[str, ...] = ()
    recorded: tuple[str, ...] = ()  # SAEs whose files were found and recorded (copied in when small)


def upgrade_store(url: str, *, storage_options: dict[str, Any] | None = None) -> UpgradeResult:
    """Upgrade the store at ``url`` in place to :data:`~actstore.store.metadata.FORMAT_VERSION`
    (a store already there is left alone, except SAEs whose files an earlier upgrade did not find)."""
    store = Store.open(url, storage_options=storage_options, mode="r+")
    before = store.meta.format_version
    if before < 2:
        _store_tokenizer(store)  # version 1 -> 2
    notes, recorded = _record_saes(store)  # version 2 -> 3
    assert store.meta.format_version == FORMAT_VERSION, "an upgrade step is missing"
    return UpgradeResult(url, before, store.meta.format_version, tuple(notes), tuple(recorded))


def _record_saes(store: Store) -> tuple[list[str], list[str]]:
    """Record (and copy in) each SAE whose placement the store lacks, where its files are found;
    returns notes on those not found and the names of those recorded."""
    notes, recorded, saes = [], [], []
    for info in store.meta.saes:
        path = legacy_sae_path(store, info) if info.origin is None else None
        if info.origin is None and path is None:
            notes.append(f"SAE {info.name!r}: no local files at {info.source!r} here (a Hub path, or files elsewhere); "
                         "kept as recorded. Where its files are, `actstore upgrade` again copies them in; else give "
                         f"them with --sae-path {info.name}=PATH when loading")
        elif path is not None:
            found = load_sae(str(path))
            if found.sha256 != info.sha256:
                raise StoreMismatchError(f"the SAE files at {str(path)!r} are not the ones SAE {info.name!r} of "
                                         f"{store.location.url!r} was made with; the store was left as it was")
            info = info.model_copy(update=placement(str(path), None, info.name))
            recorded.append(info.name)
        saes.append(record_sae_files(store.files, info, SAE_FILES_VERSION))
    if saes != store.meta.saes or store.meta.format_version != FORMAT_VERSION:
        store.update_meta(saes=saes, format_version=FORMAT_VERSION)
    return notes, recorded


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
