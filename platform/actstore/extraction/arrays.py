"""The arrays an extraction writes, created once before any unit runs.

A plain function of the store and the plan, so that the Ray driver and the benchmarks (which
run without Ray) prepare a store the same way.
"""

from __future__ import annotations

from typing import Any

from actstore.extraction.plan import ExtractPlan
from actstore.store.codes import create_code_arrays
from actstore.store.layout import activation_array, create_unit_array
from actstore.store.metadata import StageInfo
from actstore.store.sae_files import record_sae_files
from actstore.store.sitenames import BASE
from actstore.store.stats import create_stats_arrays
from actstore.store.store import Store

__all__ = ["create_extract_arrays"]


def create_extract_arrays(store: Store, plan: ExtractPlan, *, config_record: dict[str, Any]) -> None:
    """Activations, codes and statistics arrays of ``plan``'s sites and SAEs; the store's metadata
    adds them, records the plan's model (``model``, or ``models.<tag>``), the plan's stage and ``config_record`` (the config with secrets
    stripped). A later stage (new sites on an existing store) creates only its own arrays."""
    grid = store.grid
    for site in plan.sites:
        if site.stored:
            create_unit_array(store.group, activation_array(site.name), grid, (site.d,), site.dtype,
                              compression=site.compression, attributes={"axes": ["ctx", "pos", "d"], "site": site.name})
    for sae in plan.saes:
        create_code_arrays(store.group, grid, sae)
    create_stats_arrays(store.group, grid, {s.name: s.d for s in plan.sites}, {a.name: a.d_sae for a in plan.saes})
    meta = store.meta
    saes = [record_sae_files(store.files, sae, meta.format_version) for sae in plan.saes]  # copies before the metadata
    models = {"model": plan.model_meta} if plan.tag == BASE else {"models": {**meta.models, plan.tag: plan.model_meta}}
    store.update_meta(**models, sites=[*meta.sites, *plan.sites], saes=[*meta.saes, *saes],
                      stages={**meta.stages, plan.stage: StageInfo(units_total=meta.n_units)},
                      configs={**meta.configs, plan.stage: config_record})
