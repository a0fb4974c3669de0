"""``actstore encode``: add an SAE's codes to a finished store from its stored activations.

The coordinator validates the SAE against the site, creates the code and statistics arrays and
records the SAE (stage ``encode-<name>``) in the root metadata; Ray tasks encode units, each
owning its shards and committing a manifest last; finalize merges the statistics. A rerun with
the same SAE skips committed units; a different SAE under the same name is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ray

from actstore.cluster.runtime import drain, ensure_ray, unwrapped_errors
from actstore.config import RayConfig
from actstore.errors import ConfigError, StoreMismatchError
from actstore.extraction.plan import EXCLUDE_FLAGS
from actstore.extraction.stored import encode_stage, encode_stored_unit
from actstore.saes.formats import SAEWeights, load_sae
from actstore.store._fs import Location
from actstore.store.codes import create_code_arrays, require_current_codes
from actstore.store.metadata import SaeInfo, SiteInfo, StageInfo
from actstore.store.sae_files import placement, record_sae_files
from actstore.store.stats import create_stats_arrays, merge_stats
from actstore.store.store import EXTRACT_STAGE, Store, utc_now

__all__ = ["run_encode"]

TASK_RETRIES = 3


def _encode(location: Location, sae: SaeInfo, site: SiteInfo, weights: SAEWeights, unit: int, exclude: int) -> int:
    import torch

    from actstore.saes.encode import SAEEncoder

    torch.set_num_threads(1)
    store = Store.open(location.url, storage_options=location.storage_options, mode="r+", probe=False)
    return encode_stored_unit(store, sae, site, SAEEncoder(weights), unit, exclude)


def run_encode(url: str, sae_path: str, *, name: str | None = None, site: str | None = None, code_cap: int = 256,
               value_dtype: str = "bfloat16", storage_options: dict[str, Any] | None = None,
               ray_config: RayConfig | None = None, progress: bool = False) -> Store:
    """Encode every unit of a finished extraction with the SAE at ``sae_path``; returns the store."""
    store = Store.open(url, storage_options=storage_options, mode="r+")
    require_current_codes(store, "encode")
    if not (store.meta.stages.get(EXTRACT_STAGE) and store.meta.stages[EXTRACT_STAGE].complete):
        raise ConfigError(f"the extraction of {url!r} is not finished; encode after it completes")
    weights = load_sae(sae_path)
    info, site_info = _sae_info(store, weights, sae_path, name=name, site=site, code_cap=code_cap, value_dtype=value_dtype)
    if not store.meta.stages[site_info.stage].complete:
        raise ConfigError(f"stage {site_info.stage!r} (site {site_info.name!r}) of {url!r} is not finished; "
                          "resume that extraction first")
    _prepare(store, info)
    todo = sorted(set(range(store.meta.n_units)) - set(store.units_done(info.stage)))
    if todo:
        ensure_ray(ray_config)
        task = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(_encode)
        weights_ref = ray.put(weights)
        with unwrapped_errors():
            drain((task.remote(store.location, info, site_info, weights_ref, u, _stats_exclude(store)) for u in todo), len(todo),
                  f"encode {info.name}", progress=progress)
    merge_stats(store.group, store.units_done(info.stage), [], [info.name])
    store.update_meta(stages={**store.meta.stages, info.stage: StageInfo(
        units_total=store.meta.n_units, complete=True, finalized_at=utc_now())})
    return store


def _stats_exclude(store: Store) -> int:
    """The token flags the extraction left out of statistics (its config), so both agree."""
    kinds = store.meta.configs.get("extract", {}).get("stats", {}).get("exclude", ["bos", "pad"])
    return sum(EXCLUDE_FLAGS[k] for k in set(kinds))


def _sae_info(store: Store, weights: SAEWeights, sae_path: str, *, name: str | None, site: str | None, code_cap: int,
              value_dtype: str) -> tuple[SaeInfo, SiteInfo]:
    """Check the SAE against the stored site and an SAE already recorded under the name."""
    path = Path(sae_path.rstrip("/"))
    name = name or (path.parent.name if path.suffix == ".npz" else path.name)
    site = site or weights.hook_name
    stored = {s.name: s for s in store.meta.sites if s.stored}
    if site is None or site not in stored:
        raise ConfigError(f"SAE {sae_path!r} reads {site!r}; the store holds activations of {sorted(stored) or 'no site'}"
                          + ("" if site else " (give --site)"))
    if weights.d_in != stored[site].d:
        raise ConfigError(f"SAE {sae_path!r} has d_in={weights.d_in}, but {site!r} is {stored[site].d} wide")
    info = SaeInfo(name=name, site=site, architecture=weights.architecture, d_in=weights.d_in, d_sae=weights.d_sae,
                   k=weights.k, code_cap=min(code_cap, weights.d_sae), value_dtype=value_dtype,
                   sha256=weights.sha256, stage=encode_stage(name), input_dtype=stored[site].dtype,
                   **placement(sae_path, None, name))
    existing = next((s for s in store.meta.saes if s.name == name), None)
    where = {"source", "origin", "revision", "file"}
    if existing is not None and existing.model_dump(exclude=where) != info.model_dump(exclude=where):
        raise StoreMismatchError(f"the store already has an SAE named {name!r} with other weights or settings; "
                                 "choose another --name")
    return info, stored[site]


def _prepare(store: Store, sae: SaeInfo) -> None:
    """Arrays and metadata of the new SAE (coordinator only; kept on a rerun)."""
    if any(s.name == sae.name for s in store.meta.saes):
        return
    create_code_arrays(store.group, store.grid, sae)
    create_stats_arrays(store.group, store.grid, {}, {sae.name: sae.d_sae})
    sae = record_sae_files(store.files, sae, store.meta.format_version)  # copies before the metadata
    store.update_meta(saes=[*store.meta.saes, sae], stages={**store.meta.stages, sae.stage: StageInfo(units_total=store.meta.n_units)})
