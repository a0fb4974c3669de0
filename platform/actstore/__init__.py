"""actstore: corpus-scale activation and SAE-code stores for interpretability research.

Importing actstore is light: torch, transformers and Ray are imported only by the parts that
need them.

>>> import actstore
>>> store = actstore.open("runs/demo")  # doctest: +SKIP
>>> store.info().n_tokens  # doctest: +SKIP
"""

from actstore._version import __version__
from actstore.api import Store, open_store
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

open = open_store

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
