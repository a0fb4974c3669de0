"""Validating an extraction config against the model, the SAEs and the store, before any work.

The result is an :class:`ExtractPlan`: the config plus everything resolved from it (dtypes,
site widths, SAE descriptions). Configs are never mutated; plans are derived.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from actstore.config import ExtractConfig, HFSource, SaeConfig
from actstore.errors import ConfigError
from actstore.models.loading import load_model_config, resolve_attn_implementation
from actstore.models.shapes import shipped_config
from actstore.models.sites import parse_site, site_width
from actstore.saes.formats import SAEWeights, load_sae
from actstore.saes.releases import ReleaseSae, gemma_scope_folder
from actstore.store.layout import FLAG_BOS, FLAG_EOS, FLAG_PAD
from actstore.store.metadata import SaeInfo, SiteInfo

__all__ = ["EXCLUDE_FLAGS", "ExtractPlan", "plan_extraction"]

EXCLUDE_FLAGS = {"bos": FLAG_BOS, "eos": FLAG_EOS, "pad": FLAG_PAD}


@dataclass(frozen=True)
class ExtractPlan:
    """A validated extraction: what every worker needs, and nothing it must recompute."""

    config: ExtractConfig
    model_type: str
    model_dtype: str
    device: str
    attn_implementation: str | None
    sites: tuple[SiteInfo, ...]
    saes: tuple[SaeInfo, ...]
    exclude_flags: int
    stage: str = "extract"  # the manifest stage this plan's units commit
    reads: tuple[SiteInfo, ...] = ()  # sites of earlier stages captured only as input to this stage's SAEs

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
        return max(parse_site(s.name).layer for s in self.captured) + 1

    @property
    def capture(self) -> list[str]:
        return [s.name for s in self.captured]

    @property
    def model_meta(self) -> dict[str, object]:
        source = self.config.model.model_dump(exclude_none=True, include={"id", "revision", "gguf_file", "package"})
        name = source.get("id") or source.get("package") or source.get("gguf_file")
        return {"name": name, "source": source, "model_type": self.model_type, "dtype": self.model_dtype,
                "attn_implementation": self.attn_implementation}


def _site_dtype(configured: str, model_dtype: str) -> str:
    return model_dtype if configured == "model" else configured


def plan_extraction(config: ExtractConfig, *, gpu_workers: bool, load: bool = True,
                    keep: Callable[[str, SAEWeights], Any] | None = None) -> tuple[ExtractPlan, dict[str, Any]]:
    """Check sites against the model, SAE shapes against their sites; resolve dtypes.

    Returns the plan and, per SAE, ``keep(name, weights)`` of its loaded weights (default: the
    weights themselves; the extraction driver puts each in Ray's object store, so it holds one
    SAE at a time). With ``load=False`` (``actstore plan``), SAEs that SAELens' Gemma Scope table
    lists are described from the table and the shipped model shapes without downloading them
    (their sha256 is then empty), and nothing is kept. Shipped shapes answer known models without the Hub.
    """
    model_config = load_model_config(config.model, shipped=True)
    model_dtype = config.model.dtype if config.model.dtype != "auto" else ("bfloat16" if gpu_workers else "float32")
    attn = resolve_attn_implementation(model_config.model_type, config.model.attn_implementation)
    widths = {}
    for site in config.sites:
        widths[site.name] = site_width(model_config, parse_site(site.name))
    sites = tuple(SiteInfo(name=s.name, d=widths[s.name], dtype=_site_dtype(s.dtype, model_dtype),
                           stored=s.store_activations, compression=s.compression) for s in config.sites)
    kept: dict[str, Any] = {}
    saes = []
    for sae in config.saes:
        known = None if load else gemma_scope_folder(sae.path)
        if known is not None:
            info = _release_sae(sae, known)
        else:
            w = load_sae(sae.path, revision=sae.revision)
            if w.hook_name and w.hook_name != sae.site:
                raise ConfigError(f"SAE {sae.name!r} was trained on {w.hook_name!r}, but is configured for {sae.site!r}")
            info = SaeInfo(name=sae.name, site=sae.site, architecture=w.architecture, d_in=w.d_in, d_sae=w.d_sae, k=w.k,
                           code_cap=sae.code_cap, value_dtype=sae.value_dtype, source=sae.path, sha256=w.sha256)
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
    plan = ExtractPlan(config, model_config.model_type, model_dtype, "cuda" if gpu_workers else "cpu", attn,
                       sites, tuple(saes), exclude)
    return plan, kept


def _release_sae(sae: SaeConfig, known: ReleaseSae) -> SaeInfo:
    """A Gemma Scope SAE described from SAELens' table and its model's shipped shapes (no download)."""
    trained_on = shipped_config(HFSource(id=f"google/{known.model}"))
    if trained_on is None:
        raise ConfigError(f"SAE {sae.name!r}: the shapes of {known.model}, which {known.repo} was trained on, do not ship "
                          "with actstore")
    return SaeInfo(name=sae.name, site=sae.site, architecture="jumprelu", d_in=site_width(trained_on, parse_site(known.site)),
                   d_sae=known.d_sae, code_cap=sae.code_cap, value_dtype=sae.value_dtype, source=sae.path, sha256="")
