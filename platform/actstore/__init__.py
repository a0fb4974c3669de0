"""actstore: corpus-scale activation and SAE-code stores for interpretability research.

Importing actstore is light: torch, transformers and Ray are imported only by the parts that
need them, and the public names below load on first use (PEP 562), so that ``actstore --help``
and other entry points that need none of them do not pay for zarr, pydantic and polars.

>>> import actstore
>>> store = actstore.open("runs/demo")  # doctest: +SKIP
>>> store.info().n_tokens  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from actstore._version import __version__

if TYPE_CHECKING:
    from actstore.api import Store
    from actstore.api import open_store as open
    from actstore.config import (
        ContextConfig,
        CorpusConfig,
        HFSource,
        IngestConfig,
        RayConfig,
        StoreConfig,
    )
    from actstore.errors import (
        ActstoreError,
        ConfigError,
        CorpusError,
        StorageAccessError,
        StoreExistsError,
        StoreMismatchError,
        StoreNotFoundError,
        TokenizerError,
        UnitNotDoneError,
        UnsupportedFormatError,
    )

# public name -> (module, attribute)
_LAZY = {
    "Store": ("actstore.api", "Store"),
    "open": ("actstore.api", "open_store"),
    **{name: ("actstore.config", name) for name in
       ("ContextConfig", "CorpusConfig", "HFSource", "IngestConfig", "RayConfig", "StoreConfig")},
    **{name: ("actstore.errors", name) for name in
       ("ActstoreError", "ConfigError", "CorpusError", "StorageAccessError", "StoreExistsError", "StoreMismatchError",
        "StoreNotFoundError", "TokenizerError", "UnitNotDoneError", "UnsupportedFormatError")},
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'actstore' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "ActstoreError",
    "ConfigError",
    "ContextConfig",
    "CorpusConfig",
    "CorpusError",
    "HFSource",
    "IngestConfig",
    "RayConfig",
    "StorageAccessError",
    "Store",
    "StoreConfig",
    "StoreExistsError",
    "StoreMismatchError",
    "StoreNotFoundError",
    "TokenizerError",
    "UnitNotDoneError",
    "UnsupportedFormatError",
    "__version__",
    "open",
]
