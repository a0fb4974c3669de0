"""The live model: a store's model and SAEs loaded once, for features on a text, corpus
evidence, steering with latents and dose-response sweeps. Its session imports torch when it is
first asked for (``actstore`` does not, and neither do the light modules here, such as
:mod:`actstore.live.checks`, which the feature browser uses without a model: a server process
without ``--model`` stays ~185 MiB smaller).

>>> from actstore.live import open_session
>>> session = open_session("runs/demo")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from actstore.config import LiveConfig

if TYPE_CHECKING:
    from actstore.live.run import SteerResult
    from actstore.live.session import LiveSession, open_session
    from actstore.live.steering import Intervention

__all__ = ["Intervention", "LiveConfig", "LiveSession", "SteerResult", "open_session"]

_LAZY = {"SteerResult": "actstore.live.run", "LiveSession": "actstore.live.session",
         "open_session": "actstore.live.session", "Intervention": "actstore.live.steering"}


def __getattr__(name: str) -> Any:
    """The torch-backed exports, imported on first use."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'actstore.live' has no attribute {name!r}")
