"""Stores rewritten in place as format v2 wrote them, for the upgrade and fallback tests: codes
as ``idx`` (int32, -1 past the L0) and ``val``, an index as ``token`` (absolute, rank order) and
``value`` (plain zstd), SAEs recorded by path only (no ``saes/<name>/`` copy, no placement)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import zarr

import actstore
from actstore.index.layout import INDEX_ATTRIBUTE, bucket_array, index_group
from actstore.store.codes import read_codes
from actstore.store.dtypes import numpy_dtype, to_storage
from actstore.store.layout import create_unit_array
from actstore.store.metadata import ATTRIBUTE

V3_SAE_FIELDS = ("origin", "revision", "file")


def as_v2(path: Path) -> Path:
    """Rewrite the current-format store at ``path`` as format v2; returns ``path``."""
    store = actstore.open(str(path))
    group = zarr.open_group(str(path), mode="r+")
    for info in store.meta.saes:
        codes = read_codes(store, info.name, slice(None))
        axes = {"axes": ["ctx", "pos", "slot"], "sae": info.name}
        create_unit_array(group, f"codes/{info.name}/idx", store.grid, (info.code_cap,), "int32", fill_value=-1,
                          attributes=axes)[...] = codes.idx
        create_unit_array(group, f"codes/{info.name}/val", store.grid, (info.code_cap,), info.value_dtype,
                          attributes=axes)[...] = to_storage(np.asarray(codes.val), info.value_dtype)
        for name in ("latent", "value"):
            del group[f"codes/{info.name}/{name}"]
        if index_group(info.name) in group:
            _index_as_v2(store, group, info.name, info.value_dtype)
    shutil.rmtree(path / "saes", ignore_errors=True)
    raw = dict(group.attrs[ATTRIBUTE])
    saes = [{k: v for k, v in sae.items() if k not in V3_SAE_FIELDS} for sae in raw["saes"]]
    group.attrs[ATTRIBUTE] = {**raw, "format_version": 2, "saes": saes}
    return path


def _index_as_v2(store: actstore.Store, group: zarr.Group, sae: str, value_dtype: str) -> None:
    latents = store.sae(sae)
    plan = latents.index
    for b in range(plan.n_buckets):
        ranked = [latents.postings(latent) for latent in plan.latents(b)]
        del group[bucket_array(sae, b, "token_gap")], group[bucket_array(sae, b, "value")]
        values = np.concatenate([v for _, v in ranked]).astype(numpy_dtype(value_dtype))
        for name, data, logical in (("token", np.concatenate([t for t, _ in ranked]), "int64"),
                                    ("value", to_storage(values, value_dtype), value_dtype)):
            zarr.create_array(group.store, name=bucket_array(sae, b, name), shape=data.shape, chunks=(max(data.size, 1),),
                              dtype=data.dtype, fill_value=0, attributes={"logical_dtype": logical, "per_token": False})[...] = data
    group[index_group(sae)].attrs[INDEX_ATTRIBUTE] = plan.model_dump(mode="json", exclude={"block"})
