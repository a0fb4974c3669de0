"""The store page over many SAEs: each SAE placed by the layer and kind of the site it reads, so
a whole release (78 SAEs of Gemma 2 2B) reads as one table, layer by layer."""

from __future__ import annotations

from typing import Any

from actstore.errors import ConfigError
from actstore.models.sites import parse_site

__all__ = ["KIND_LABELS", "by_layer", "site_place"]

# execution order inside a block, with the names Gemma Scope's releases use
KIND_LABELS = {"resid_pre": "resid_pre", "attn_z": "att (hook_z)", "attn_out": "attn_out", "mlp_out": "mlp",
               "resid_post": "res (resid_post)"}


def site_place(site: str) -> dict[str, Any]:
    """``{"layer": L, "kind": K}`` of a site name (layer None and the name as kind if it is not a block site)."""
    try:
        spec = parse_site(site)
    except ConfigError:
        return {"layer": None, "kind": site}
    return {"layer": spec.layer, "kind": spec.kind}


def by_layer(saes: list[dict[str, Any]]) -> dict[str, Any]:
    """The SAEs (dicts with ``layer`` and ``kind``) as rows per layer and columns per kind present:
    ``{"kinds": [(kind, label)], "rows": [{"layer": L, "cells": {kind: [sae, ...]}}]}``."""
    present = {s["kind"] for s in saes}
    kinds = [k for k in KIND_LABELS if k in present] + sorted(present - set(KIND_LABELS))
    rows: dict[Any, dict[str, list[dict[str, Any]]]] = {}
    for sae in saes:
        rows.setdefault(sae["layer"], {}).setdefault(sae["kind"], []).append(sae)
    order = sorted(rows, key=lambda layer: (layer is None, layer if layer is not None else 0))
    return {"kinds": [(k, KIND_LABELS.get(k, k)) for k in kinds], "rows": [{"layer": L, "cells": rows[L]} for L in order]}
