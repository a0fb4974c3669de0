"""The site registry: TransformerLens-style site names and where to hook them, per architecture.

Gemma 2 follows Gemma Scope exactly (see docs/sites.md):

=========================  ==========================================================
``blocks.L.hook_resid_pre``  forward pre-hook on ``layers[L]``, its hidden_states input
``blocks.L.attn.hook_z``     forward pre-hook on ``layers[L].self_attn.o_proj``, args[0]
``blocks.L.hook_attn_out``   forward hook on ``layers[L].post_attention_layernorm``
``blocks.L.hook_mlp_out``    forward hook on ``layers[L].post_feedforward_layernorm``
``blocks.L.hook_resid_post`` forward hook on ``layers[L]``, its output
=========================  ==========================================================

The Llama family (SmolLM2) has no post-sublayer norms: attn_out is ``self_attn``'s output and
mlp_out is ``mlp``'s output. Sites are never read from ``hidden_states``, whose last entry has
the final norm applied.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from actstore.errors import ConfigError

__all__ = ["ARCHITECTURES", "SiteKind", "SiteSpec", "parse_site", "site_width"]

SiteKind = Literal["resid_pre", "attn_z", "attn_out", "mlp_out", "resid_post"]

_PATTERN = re.compile(r"^blocks\.(\d+)\.(hook_resid_pre|attn\.hook_z|hook_attn_out|hook_mlp_out|hook_resid_post)$")
_KIND: dict[str, SiteKind] = {
    "hook_resid_pre": "resid_pre",
    "attn.hook_z": "attn_z",
    "hook_attn_out": "attn_out",
    "hook_mlp_out": "mlp_out",
    "hook_resid_post": "resid_post",
}
# execution order of the sites inside one block
_ORDER: dict[SiteKind, int] = {"resid_pre": 0, "attn_z": 1, "attn_out": 2, "mlp_out": 3, "resid_post": 4}


@dataclass(frozen=True, order=True)
class SiteSpec:
    """A parsed site; ordering follows execution order in the forward pass."""

    layer: int
    order: int
    kind: SiteKind
    name: str


def parse_site(name: str) -> SiteSpec:
    match = _PATTERN.match(name)
    if match is None:
        raise ConfigError(
            f"unknown site {name!r}; sites look like blocks.L.hook_resid_pre, blocks.L.attn.hook_z, "
            "blocks.L.hook_attn_out, blocks.L.hook_mlp_out or blocks.L.hook_resid_post"
        )
    kind = _KIND[match.group(2)]
    return SiteSpec(int(match.group(1)), _ORDER[kind], kind, name)


@dataclass(frozen=True)
class HookPoint:
    """A module path relative to a decoder layer, whether the hook is a pre-hook, and what to take."""

    module: str
    pre: bool
    take: Callable[[tuple[Any, ...], dict[str, Any], Any], Any]


def _first_arg(args: tuple[Any, ...], kwargs: dict[str, Any], _out: Any) -> Any:
    return args[0] if args else kwargs["hidden_states"]


def _output(args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Any:
    return out[0] if isinstance(out, tuple) else out  # transformers 4.x layers return tuples


_COMMON: dict[SiteKind, HookPoint] = {
    "resid_pre": HookPoint("", True, _first_arg),
    "attn_z": HookPoint("self_attn.o_proj", True, _first_arg),
    "resid_post": HookPoint("", False, _output),
}

ARCHITECTURES: dict[str, dict[SiteKind, HookPoint]] = {
    "gemma2": {
        **_COMMON,
        "attn_out": HookPoint("post_attention_layernorm", False, _output),
        "mlp_out": HookPoint("post_feedforward_layernorm", False, _output),
    },
    "llama": {
        **_COMMON,
        "attn_out": HookPoint("self_attn", False, _output),
        "mlp_out": HookPoint("mlp", False, _output),
    },
}


def hook_point(model_type: str, kind: SiteKind) -> HookPoint:
    if model_type not in ARCHITECTURES:
        raise ConfigError(f"no site registry for model type {model_type!r}; known: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[model_type][kind]


def site_width(config: Any, spec: SiteSpec) -> int:
    """Width of a site's vectors from the model config alone (no weights needed)."""
    hook_point(config.model_type, spec.kind)
    if not 0 <= spec.layer < config.num_hidden_layers:
        raise ConfigError(f"site {spec.name!r}: the model has layers 0..{config.num_hidden_layers - 1}")
    if spec.kind == "attn_z":
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return int(config.num_attention_heads * head_dim)
    return int(config.hidden_size)
