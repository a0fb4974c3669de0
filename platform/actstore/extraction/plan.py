"""Validating an extraction config against the model, the SAEs and the store, before any work.

The result is an :class:`ExtractPlan`: the config plus everything resolved from it (dtypes,
site widths, SAE descriptions). Configs are never mutated; plans are derived.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from actstore.config import ExtractConfig, HFSource, ModelConfig, SaeConfig
from actstore.errors import ConfigError
from actstore.models.loading import load_model_config, resolve_attn_implementation
from actstore.models.shapes import shipped_config
from actstore.models.sites import parse_site, site_width
from actstore.saes.formats import SAEWeights, load_sae
from actstore.saes.releases import ReleaseSae, gemma_scope_folder
from actstore.store.layout import FLAG_BOS, FLAG_EOS, FLAG_PAD, FLAG_SPECIAL
from actstore.store.metadata import SaeInfo, SiteInfo
from actstore.store.sae_files import placement
from actstore.store.sitenames import BASE, split_site

__all__ = ["EXCLUDE_FLAGS", "ExtractPlan", "ModelPlan", "plan_extraction"]

EXCLUDE_FLAGS = {"bos": FLAG_BOS, "eos": FLAG_EOS, "pad": FLAG_PAD, "special": FLAG_SPECIAL}


@dataclass(frozen=True)
class ModelPlan:
    """One model of an extraction, resolved: where it loads from, its architecture, compute dtype
    and attention implementation."""

    source: ModelConfig
    model_type: str
    dtype: str
    attn_implementation: str | None

    @property
    def meta(self) -> dict[str, object]:
        """What the store records of it (``model``, or ``models.<tag>`` for a further model)."""
        source = self.source.model_dump(exclude_none=True, include={"id", "revision", "gguf_file", "package"})
        name = source.get("id") or source.get("package") or source.get("gguf_file")
        return {"name": name, "source": source, "model_type": self.model_type, "dtype": self.dtype,
                "attn_implementation": self.attn_implementation}


@dataclass(frozen=True)
class ExtractPlan:
    """A validated extraction: what every worker needs, and nothing it must recompute.

    A stage runs one model, ``tag`` (:data:`~actstore.store.sitenames.BASE`: the store's own);
    ``models`` holds every model of the config, resolved."""

    config: ExtractConfig
    models: Mapping[str, ModelPlan]
    device: str
    sites: tuple[SiteInfo, ...]
    saes: tuple[SaeInfo, ...]
    exclude_flags: int
    stage: str = "extract"  # the manifest stage this plan's units commit
    reads: tuple[SiteInfo, ...] = ()  # sites of earlier stages captured only as input to this stage's SAEs
    tag: str = BASE  # the model this stage runs

    @property
    def model(self) -> ModelPlan:
        return self.models[self.tag]

    @property
    def model_type(self) -> str:
        return self.model.model_type

    @property
    def model_dtype(self) -> str:
        return self.model.dtype

    @property
    def attn_implementation(self) -> str | None:
        return self.model.attn_implementation

    @property
    def model_meta(self) -> dict[str, object]:
        return self.model.meta

    @property
    def captured(self) -> tuple[SiteInfo, ...]:
        """Every site the forward captures: this stage's own and those its SAEs read."""
        return self.sites + self.reads

    @property
    def units_in_flight(self) -> int:
        configured = self.config.workers.units_in_flight
        return configured if configured is not None else (2 if self.device == "cuda" else 1)

    @property
    def layers_needed(self) -> int:
        """Blocks a worker loads: up to the deepest site's, none after it."""
        return max(parse_site(split_site(s.name)[1]).layer for s in self.captured) + 1

    @property
    def capture(self) -> list[str]:
        """The captured sites as the model knows them (without the store's model tag)."""
        return [split_site(s.name)[1] for s in self.captured]


def _site_dtype(configured: str, model_dtype: str) -> str:
    return model_dtype if configured == "model" else configured


def _model_plan(source: ModelConfig, gpu_workers: bool) -> tuple[ModelPlan, Any]:
    config = load_model_config(source, shipped=True)
    dtype = source.dtype if source.dtype != "auto" else ("bfloat16" if gpu_workers else "float32")
    attn = resolve_attn_implementation(config.model_type, source.attn_implementation)
    return ModelPlan(source, config.model_type, dtype, attn), config


def plan_extraction(config: ExtractConfig, *, gpu_workers: bool, load: bool = True,
                    keep: Callable[[str, SAEWeights], Any] | None = None) -> tuple[ExtractPlan, dict[str, Any]]:
    """Check sites against their model, SAE shapes against their sites; resolve dtypes.

    Returns the plan and, per SAE, ``keep(name, weights)`` of its loaded weights (default: the
    weights themselves; the extraction driver puts each in Ray's object store, so it holds one
    SAE at a time). With ``load=False`` (``actstore plan``), SAEs that SAELens' Gemma Scope table
    lists are described from the table and the shipped model shapes without downloading them
    (their sha256 is then empty), and nothing is kept. Shipped shapes answer known models without the Hub.
    """
    models, model_configs = {}, {}
    for tag, source in {BASE: config.model, **config.models}.items():
        models[tag], model_configs[tag] = _model_plan(source, gpu_workers)
    widths, sites = {}, []
    for s in config.sites:
        tag, bare = split_site(s.name)
        widths[s.name] = site_width(model_configs[tag], parse_site(bare))
        sites.append(SiteInfo(name=s.name, d=widths[s.name], dtype=_site_dtype(s.dtype, models[tag].dtype),
                              stored=s.store_activations, compression=s.compression))
    kept: dict[str, Any] = {}
    saes = []
    for sae in config.saes:
        known = None if load else gemma_scope_folder(sae.path)
        if known is not None:
            info = _release_sae(sae, known)
        else:
            w = load_sae(sae.path, revision=sae.revision)
            if w.hook_name and w.hook_name != split_site(sae.site)[1]:
                raise ConfigError(f"SAE {sae.name!r} was trained on {w.hook_name!r}, but is configured for {sae.site!r}")
            info = SaeInfo(name=sae.name, site=sae.site, architecture=w.architecture, d_in=w.d_in, d_sae=w.d_sae, k=w.k,
                           code_cap=sae.code_cap, value_dtype=sae.value_dtype, sha256=w.sha256,
                           **placement(sae.path, sae.revision, sae.name))
            if load:
                kept[sae.name] = keep(sae.name, w) if keep is not None else w
        if info.d_in != widths[sae.site]:
            raise ConfigError(
                f"SAE {sae.name!r} ({sae.path}) has d_in={info.d_in} but site {sae.site!r} of this model is "
                f"{widths[sae.site]} wide; pick the SAE trained on this site (attn.hook_z SAEs read n_heads*head_dim)"
            )
        saes.append(info.model_copy(update={"input_dtype": next(s.dtype for s in sites if s.name == sae.site),
                                            "weights_dtype": sae.weights_dtype}))
    exclude = 0
    for kind in config.stats.exclude:
        exclude |= EXCLUDE_FLAGS[kind]
    plan = ExtractPlan(config, models, "cuda" if gpu_workers else "cpu", tuple(sites), tuple(saes), exclude)
    return plan, kept


def _release_sae(sae: SaeConfig, known: ReleaseSae) -> SaeInfo:
    """A Gemma Scope SAE described from SAELens' table and its model's shipped shapes (no download)."""
    trained_on = shipped_config(HFSource(id=f"google/{known.model}"))
    if trained_on is None:
        raise ConfigError(f"SAE {sae.name!r}: the shapes of {known.model}, which {known.repo} was trained on, do not ship "
                          "with actstore")
    return SaeInfo(name=sae.name, site=sae.site, architecture="jumprelu", d_in=site_width(trained_on, parse_site(known.site)),
                   d_sae=known.d_sae, code_cap=sae.code_cap, value_dtype=sae.value_dtype, sha256="",
                   **placement(sae.path, sae.revision, sae.name))
