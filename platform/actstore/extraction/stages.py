"""Extraction stages: the first extraction, and later ones that add sites or SAEs to a store.

A store's first extraction is the stage ``extract``. An extraction whose config names sites or
SAEs the store lacks runs as a new stage ``extract-<n>`` over the stored tokens: it has its own
manifests and writes only its own arrays, so the earlier stages' bytes are never rewritten.
Each site and SAE records the stage that commits it (``SiteInfo.stage``, ``SaeInfo.stage``).
"""

from __future__ import annotations

import dataclasses

from actstore.errors import ConfigError
from actstore.extraction.plan import ExtractPlan
from actstore.store.metadata import RootMetadata
from actstore.store.store import EXTRACT_STAGE

__all__ = ["added_stage", "is_extract_stage", "require_weights", "stage_plans"]


def is_extract_stage(stage: str) -> bool:
    """Whether ``stage`` runs the model (extract or extract-<n>), as opposed to tokens or encode-<name>."""
    return stage == EXTRACT_STAGE or stage.startswith(f"{EXTRACT_STAGE}-")


def added_stage(plan: ExtractPlan, meta: RootMetadata) -> ExtractPlan | None:
    """The plan of a new stage for the sites and SAEs of ``plan`` the store lacks (None: nothing new)."""
    have_sites, have_saes = {s.name for s in meta.sites}, {a.name for a in meta.saes}
    sites = [s for s in plan.sites if s.name not in have_sites]
    saes = [a for a in plan.saes if a.name not in have_saes]
    if not sites and not saes:
        return None
    stage = f"{EXTRACT_STAGE}-{sum(map(is_extract_stage, meta.stages)) + 1}"
    return dataclasses.replace(plan, stage=stage, sites=tuple(s.model_copy(update={"stage": stage}) for s in sites),
                               saes=tuple(a.model_copy(update={"stage": stage}) for a in saes), reads=())


def stage_plans(plan: ExtractPlan, meta: RootMetadata) -> list[ExtractPlan]:
    """One plan per extraction stage the store records (its own sites and SAEs, as stored), in
    creation order; an SAE reading a site of an earlier stage captures that site without storing it."""
    out = []
    for stage in (s for s in meta.stages if is_extract_stage(s)):
        sites = tuple(s for s in meta.sites if s.stage == stage)
        saes = tuple(a for a in meta.saes if a.stage == stage)
        own = {s.name for s in sites}
        reads = tuple(s for s in meta.sites if s.name in {a.site for a in saes} - own)
        out.append(dataclasses.replace(plan, stage=stage, sites=sites, saes=saes, reads=reads))
    return out


def require_weights(plan: ExtractPlan, loaded: set[str]) -> None:
    """Refuse to run a stage whose SAEs the config does not name (their weights were not loaded)."""
    missing = sorted(a.name for a in plan.saes if a.name not in loaded)
    if missing:
        raise ConfigError(f"stage {plan.stage!r} of this store encodes with SAEs {missing} that the config does not "
                          "name; resume it with the config that started it")
