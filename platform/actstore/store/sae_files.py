"""Where a store's SAEs are: small local SAE files copied into the store (``saes/<name>/``, under
their own names), Hub SAEs recorded by path and revision. A store then loads its SAEs from any
folder and from object storage, like its tokenizer (``tokenizer/tokenizer.json``).

A copy is written before the root metadata that names it (``SaeInfo.file``) and is checked on
load against the SAE's recorded sha256 (``load_sae`` hashes the files it reads). Copies of a
remote store are fetched once into actstore's cache, in a folder named by that hash.

:func:`load_store_sae` loads a store's SAE wherever the store lies: the path given to override
it (``--sae-path NAME=PATH``), else the copy inside the store, else its recorded Hub path or
local path; a store from before format version 3 also tries its recorded path relative to the
folder the store was made from. The files are checked against the sha256 the store recorded.
A local path that is missing fails at once with a line saying what to pass (never a Hub retry).
The live model loads its SAEs with it, the feature browser its decoders (similar latents).
"""

from __future__ import annotations

import logging
import os
import posixpath
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actstore.errors import ConfigError
from actstore.saes.formats import SAEWeights, load_sae, sae_files
from actstore.store.cache import cache_dir

if TYPE_CHECKING:
    from actstore.store._fs import SideFiles
    from actstore.store.metadata import SaeInfo
    from actstore.store.store import Store

__all__ = ["COPY_MAX_BYTES", "SAE_FILES_VERSION", "legacy_sae_path", "load_store_sae", "placement", "record_sae_files",
           "sae_folder", "stored_sae_folder"]

log = logging.getLogger(__name__)

COPY_MAX_BYTES = 256 * 2**20  # local SAEs up to this size are copied into the store
SAE_FILES_VERSION = 3  # the first store format that records SAE placement


def sae_folder(name: str) -> str:
    """The key of the folder holding SAE ``name``'s files inside a store."""
    return f"saes/{name}"


def placement(path: str, revision: str | None, name: str) -> dict[str, Any]:
    """``source``, ``origin``, ``revision`` and ``file`` of an SAE configured as ``path``: a local
    path is recorded absolute, to be copied into the store (``file``) when its files hold at most
    :data:`COPY_MAX_BYTES`; anything else is a Hub path with its revision."""
    local = Path(os.path.expanduser(path))
    if not local.exists():
        return {"source": path, "origin": "hub", "revision": revision}
    size = sum(f.stat().st_size for f in sae_files(local))
    if size > COPY_MAX_BYTES:
        log.warning("SAE %r (%s) is %.0f MiB, over the %d MiB copied into a store: the store records its path only; "
                    "elsewhere give it with --sae-path %s=PATH", name, path, size / 2**20, COPY_MAX_BYTES >> 20, name)
    return {"source": str(local.resolve()), "origin": "local",
            "file": sae_folder(name) if size <= COPY_MAX_BYTES else None}


def record_sae_files(files: SideFiles, info: SaeInfo, format_version: int) -> SaeInfo:
    """The SAE as the store records it: its local files copied into the store at ``info.file``
    (call this before writing the metadata that names it). A store older than format version 3
    records the source only (``actstore upgrade`` adds the rest)."""
    if format_version < SAE_FILES_VERSION:
        return info.model_copy(update={"origin": None, "revision": None, "file": None})
    if info.file is not None:
        for path in sae_files(Path(info.source)):
            files.write_bytes(posixpath.join(info.file, path.name), path.read_bytes())
    return info


def stored_sae_folder(files: SideFiles, info: SaeInfo) -> Path:
    """A local folder holding the store's copy of ``info``'s files: the store's own folder when
    the store is local, else a cache folder named by the SAE's sha256, fetched once."""
    assert info.file is not None
    if files.location.is_local:
        return Path(files.path(info.file))
    folder = cache_dir() / "saes" / info.sha256
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{info.sha256[:12]}-"))
    try:
        for name in files.list(info.file):
            (tmp / name).write_bytes(files.read_bytes(posixpath.join(info.file, name)))
        os.replace(tmp, folder)  # another process may have won the race: its copy is the same
    except OSError:
        if not folder.is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def legacy_sae_path(store: Store, info: SaeInfo) -> Path | None:
    """Where the files of an SAE recorded before format version 3 (its path as configured) are
    on this machine: the path as given (absolute, or relative to the working folder), or
    relative to the folder the store was made from, when the store still lies where it was
    made from a relative URL (``runs/demo`` made in ``/work`` and now opened from elsewhere).
    None when neither exists."""
    given = Path(os.path.expanduser(info.source))
    candidates = [given]
    made_as = str(store.meta.configs.get("ingest", {}).get("store", {}).get("url", ""))
    here = Path(store.location.local_path).resolve() if store.location.is_local else None
    if not given.is_absolute() and made_as and "://" not in made_as and not Path(made_as).is_absolute() and here:
        parts = Path(made_as).parts
        if here.parts[-len(parts):] == parts:
            candidates.append(Path(*here.parts[: -len(parts)]) / given)
    return next((c for c in candidates if c.exists()), None)


def load_store_sae(store: Store, info: SaeInfo, override: str | None = None, *,
                   local_files_only: bool = False) -> SAEWeights:
    """The weights of the store's SAE ``info`` (``override``: a path or Hub path to load instead;
    ``local_files_only``: a Hub SAE only from the local cache, never downloaded)."""
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
        weights = load_sae(where, revision=revision, local_files_only=local_files_only)
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
