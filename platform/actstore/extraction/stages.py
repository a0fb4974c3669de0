"""Extraction stages: the first extraction, and later ones that add sites or SAEs to a store.

A store's first extraction is the stage ``extract``. An extraction whose config names sites or
SAEs the store lacks runs as a new stage ``extract-<n>`` over the stored tokens: it has its own
manifests and writes only its own arrays, so the earlier stages' bytes are never rewritten. A
stage runs one model: sites of a further model (``it.blocks.3.hook_resid_post``, see
:mod:`actstore.store.sitenames`) are extracted by a stage of their own.
Each site and SAE records the stage that commits it (``SiteInfo.stage``, ``SaeInfo.stage``).
"""

from __future__ import annotations

import dataclasses

from actstore.errors import ConfigError
from actstore.extraction.plan import ExtractPlan
from actstore.store.metadata import RootMetadata
from actstore.store.sitenames import BASE, model_of
from actstore.store.store import EXTRACT_STAGE

__all__ = ["added_stages", "check_first_extraction", "is_extract_stage", "require_weights", "stage_plans"]


def is_extract_stage(stage: str) -> bool:
    """Whether ``stage`` runs the model (extract or extract-<n>), as opposed to tokens or encode-<name>."""
    return stage == EXTRACT_STAGE or stage.startswith(f"{EXTRACT_STAGE}-")


def added_stages(plan: ExtractPlan, meta: RootMetadata) -> list[ExtractPlan]:
    """The plans of new stages for the sites and SAEs of ``plan`` the store lacks, one per model
    (the store's own first; none when nothing is new). A store's first extraction is the stage
    ``extract`` and runs the store's own model, so it needs one of that model's sites."""
    have_sites, have_saes = {s.name for s in meta.sites}, {a.name for a in meta.saes}
    sites = [s for s in plan.sites if s.name not in have_sites]
    saes = [a for a in plan.saes if a.name not in have_saes]
    tags = sorted({model_of(s.name) for s in sites} | {model_of(a.site) for a in saes}, key=lambda t: (t != BASE, t))
    check_first_extraction(plan, meta)
    done = sum(map(is_extract_stage, meta.stages))
    out = []
    for n, tag in enumerate(tags, start=done + 1):
        stage = EXTRACT_STAGE if n == 1 else f"{EXTRACT_STAGE}-{n}"
        own = tuple(s.model_copy(update={"stage": stage}) for s in sites if model_of(s.name) == tag)
        coded = tuple(a.model_copy(update={"stage": stage}) for a in saes if model_of(a.site) == tag)
        out.append(dataclasses.replace(plan, stage=stage, sites=own, saes=coded, reads=(), tag=tag))
    return out


def check_first_extraction(plan: ExtractPlan, meta: RootMetadata | None) -> None:
    """A store's first extraction (``meta`` None: no store yet) runs the store's own model, so the
    config must name one of its sites: refuse it before any work otherwise."""
    first = meta is None or not any(map(is_extract_stage, meta.stages))
    if first and not any(model_of(s.name) == BASE for s in plan.sites):
        raise ConfigError("a store's first extraction runs its own model (`model:`): list at least one of its sites "
                          "(a plain site name, without a model tag) before adding further models")


def stage_plans(plan: ExtractPlan, meta: RootMetadata) -> list[ExtractPlan]:
    """One plan per extraction stage the store records (its own sites and SAEs, as stored, and the
    model they belong to), in creation order; an SAE reading a site of an earlier stage captures
    that site without storing it."""
    out = []
    for stage in (s for s in meta.stages if is_extract_stage(s)):
        sites = tuple(s for s in meta.sites if s.stage == stage)
        saes = tuple(a for a in meta.saes if a.stage == stage)
        own = {s.name for s in sites}
        reads = tuple(s for s in meta.sites if s.name in {a.site for a in saes} - own)
        tag = model_of(sites[0].name if sites else saes[0].site) if sites or saes else BASE
        out.append(dataclasses.replace(plan, stage=stage, sites=sites, saes=saes, reads=reads, tag=tag))
    return out


def require_weights(plan: ExtractPlan, loaded: set[str]) -> None:
    """Refuse to run a stage whose model or SAEs the config does not name (they were not loaded)."""
    if plan.tag not in plan.models:
        raise ConfigError(f"stage {plan.stage!r} of this store runs model {plan.tag!r}, which the config's models: "
                          "does not name; resume it with the config that started it")
    missing = sorted(a.name for a in plan.saes if a.name not in loaded)
    if missing:
        raise ConfigError(f"stage {plan.stage!r} of this store encodes with SAEs {missing} that the config does not "
                          "name; resume it with the config that started it")
