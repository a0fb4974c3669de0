"""Encoding stored activations with another SAE, one unit at a time (no model forward).

The unit's activations are read back in their stored dtype and go through the same encoding and
statistics code as extraction, which also encodes the activation cast to the site's storage dtype:
the codes equal, bit for bit, those extraction writes for the same SAE.
"""

from __future__ import annotations

import numpy as np
import torch

from actstore.extraction.unit import UnitBuffers, code_writes, encode_codes
from actstore.saes.encode import SAEEncoder
from actstore.store.layout import activation_array, token_array
from actstore.store.metadata import SaeInfo, SiteInfo
from actstore.store.store import Store

__all__ = ["encode_stage", "encode_stored_unit"]


def encode_stage(sae: str) -> str:
    return f"encode-{sae}"


def encode_stored_unit(store: Store, sae: SaeInfo, site: SiteInfo, encoder: SAEEncoder, unit: int, exclude_flags: int) -> int:
    """Encode, write whole shards, commit the unit's manifest (last); returns the unit's tokens."""
    contexts = store.grid.contexts(unit)
    rows = slice(contexts.start, contexts.stop)
    stored = np.asarray(store.array(activation_array(site.name))[rows])
    x = torch.from_numpy(stored)
    if site.dtype == "bfloat16":
        x = x.view(torch.bfloat16)
    n, ctx_len = x.shape[:2]
    flags = torch.from_numpy(store.read(token_array("flags"), rows).reshape(-1))
    mask = ((flags & exclude_flags) == 0).to(encoder.device)
    buf = UnitBuffers([], [sae], n, ctx_len, encoder.device)
    encode_codes(sae, encoder, x.reshape(-1, site.d).to(encoder.device), mask, buf, slice(0, n))
    store.write_many(code_writes(sae, unit, rows, buf))
    store.manifests.commit(sae.stage, unit, {"contexts": [rows.start, rows.stop], "counted": int(mask.sum())})
    return n * ctx_len
