"""Loading a store's SAE for the live model, wherever the store lies: the path given to override
it (``--sae-path NAME=PATH``), else the copy inside the store, else its recorded Hub path or
local path; a store from before format version 3 also tries its recorded path relative to the
folder the store was made from. The files are checked against the sha256 the store recorded.
A local path that is missing fails at once with a line saying what to pass (never a Hub retry)."""

from __future__ import annotations

import shutil
from pathlib import Path

from actstore._hf import cache_dir
from actstore.errors import ConfigError
from actstore.saes.formats import SAEWeights, load_sae
from actstore.store.metadata import SaeInfo
from actstore.store.sae_files import legacy_sae_path, stored_sae_folder
from actstore.store.store import Store

__all__ = ["load_store_sae"]


def load_store_sae(store: Store, info: SaeInfo, override: str | None = None) -> SAEWeights:
    """The weights of the store's SAE ``info`` (``override``: a path or Hub path to load instead)."""
    hint = f"give its files with --sae-path {info.name}=PATH (Python: sae_paths={{{info.name!r}: PATH}})"
    from_store = override is None and info.file is not None
    if override is not None:
        where, revision = override, None
    elif from_store:
        where, revision = str(stored_sae_folder(store.files, info)), None
    elif info.origin == "local" and not Path(info.source).exists():
        raise ConfigError(f"SAE {info.name!r} was read from {info.source!r} when the store was made, and that path "
                          f"does not exist here; {hint}")
    elif info.origin is None:
        found = legacy_sae_path(store, info)
        where, revision = (str(found) if found else info.source), None
    else:
        where, revision = info.source, info.revision
    try:
        weights = load_sae(where, revision=revision)
    except ConfigError as exc:
        copy = " (the store's copy: was the store copied only partly?)" if from_store else ""
        raise ConfigError(f"cannot load SAE {info.name!r} from {where!r}{copy}: {exc}; {hint}") from None
    if weights.sha256 != info.sha256:
        cached = cache_dir() / "saes" / info.sha256
        if Path(where) == cached:
            shutil.rmtree(cached, ignore_errors=True)  # a damaged download: fetched again next time
        raise ConfigError(f"the SAE files at {where!r} are not the ones SAE {info.name!r} of the store was made with "
                          f"(sha256 {weights.sha256[:12]} != {info.sha256[:12]}); {hint}")
    return weights
