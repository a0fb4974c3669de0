"""actstore's local cache folder (converted GGUF models, SAE files fetched from a remote store).

It sits at the bottom, beside the store, because both the store's SAE copies and the model
loading above it keep files there.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir() -> Path:
    """actstore's cache folder: $ACTSTORE_CACHE, else ~/.cache/actstore."""
    return Path(os.environ.get("ACTSTORE_CACHE") or Path.home() / ".cache" / "actstore")
