"""``actstore upgrade STORE``: bring a store written in an older format version to the current one.

Version 1 to 2 stores the tokenizer inside the store: it is loaded once more from the source the
store recorded (so that source must be reachable here, this one time), checked against the
special ids and vocabulary size the store recorded, and written to ``tokenizer/tokenizer.json``;
the root metadata then names the file and says version 2.

Version 2 to 3 does two things, one version for both. First it records where each SAE is: an
SAE whose recorded path is found here (as given, or relative to the folder the store was made
from) and holds the recorded sha256 is recorded as local, its files copied into the store when
small (``saes/<name>/``); a path not found is kept as it was (``origin`` stays unset: loading
tries it as before) and named in the result's notes, and a later ``actstore upgrade`` run where
the files are records it. A path whose files differ from the recorded sha256 stops the upgrade
before anything is written. Then it rewrites every SAE's codes in the compact layout
(``store/codes.py``): for each committed unit, the int32 ids become ``codes/<sae>/latent``
(uint16 up to 65,536 latents) and the values are copied unchanged to ``codes/<sae>/value`` (no
value is rounded: the SAE keeps its value dtype); ``l0`` is kept as it is. The root metadata
then says version 3 (with the SAEs' placement), the older arrays are removed, and every index in
the older layout is built again in blocks (a Ray job, as ``actstore index``). Each step checks
what is left to do, so an interrupted upgrade runs again to completion, and a reader can read
the store at any point in between. Run it while no job writes the store: the root metadata is
rewritten.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from actstore.cluster.index import run_index
from actstore.config import HFSource
from actstore.corpus.tokenize import load_tokenizer, tokenizer_info, tokenizer_json
from actstore.errors import StoreMismatchError
from actstore.index.layout import INDEX_ATTRIBUTE, IndexPlan, index_group
from actstore.saes.formats import load_sae
from actstore.store.codes import (
    CODES_VERSION,
    LEGACY_PARTS,
    PARTS,
    create_code_arrays,
    latent_dtype,
)
from actstore.store.layout import code_array
from actstore.store.metadata import FORMAT_VERSION, SaeInfo
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
    notes, recorded, saes = _placed_saes(store)  # version 2 -> 3: checked before anything is written
    if store.meta.format_version < CODES_VERSION:
        for sae in store.meta.saes:
            _compact_codes(store, sae)
    if saes != store.meta.saes or store.meta.format_version != FORMAT_VERSION:
        store.update_meta(saes=saes, format_version=FORMAT_VERSION)
    for sae in store.meta.saes:
        for part in LEGACY_PARTS[:2]:
            if f"codes/{sae.name}/{part}" in store.group:
                del store.group[f"codes/{sae.name}/{part}"]
    for name in _older_indexes(store):
        run_index(url, name, storage_options=storage_options)
    assert store.meta.format_version == FORMAT_VERSION, "an upgrade step is missing"
    return UpgradeResult(url, before, store.meta.format_version, tuple(notes), tuple(recorded))


def _placed_saes(store: Store) -> tuple[list[str], list[str], list[SaeInfo]]:
    """Copy in each SAE whose placement the store lacks, where its files are found; returns notes
    on those not found, the names of those recorded and the SAEs as the metadata is to record them."""
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
    return notes, recorded, saes


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


def _compact_codes(store: Store, sae: SaeInfo) -> None:
    """Write an SAE's committed units again in the format 3 arrays, one unit at a time."""
    create_code_arrays(store.group, store.grid, sae, l0=False)
    ids, values = (store.array(code_array(sae.name, part)) for part in LEGACY_PARTS[:2])
    for unit in store.units_done(sae.stage):
        contexts = store.grid.contexts(unit)
        rows = slice(contexts.start, contexts.stop)
        old = np.asarray(ids[rows])
        store.write_many([(code_array(sae.name, PARTS[0]), rows, np.where(old < 0, 0, old).astype(latent_dtype(sae.d_sae))),
                          (code_array(sae.name, PARTS[1]), rows, np.asarray(values[rows]))])


def _older_indexes(store: Store) -> list[str]:
    """SAEs whose index (complete or being built) is in the older layout."""
    out = []
    for sae in store.meta.saes:
        group = index_group(sae.name)
        raw = store.group[group].attrs.get(INDEX_ATTRIBUTE) if group in store.group else None
        if raw is not None and IndexPlan.model_validate(raw).block is None:
            out.append(sae.name)
    return out
