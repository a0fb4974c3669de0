"""Capturing sites with a truncated forward pass.

Hooks copy each requested site's tensor; the hook of the last site in execution order raises
a private exception, so later blocks, the final norm and the LM head never run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from actstore.models.sites import SiteSpec, hook_point, parse_site

__all__ = ["capture_sites", "decoder_layers"]


class _StopForward(Exception):
    """Raised inside the last needed hook to end the forward pass early."""


def decoder_layers(model: Any) -> Any:
    base = getattr(model, model.base_model_prefix, model)
    return base.layers


def capture_sites(
    model: Any, input_ids: torch.Tensor, sites: Sequence[str], *, truncate: bool = True
) -> dict[str, torch.Tensor]:
    """Run ``model`` on ``input_ids`` [B, T] and return each site's activations [B, T, d]."""
    specs = sorted(parse_site(s) for s in set(sites))
    last = specs[-1]
    layers = decoder_layers(model)
    captured: dict[str, torch.Tensor] = {}
    handles = []

    def make_hook(spec: SiteSpec, pre: bool, take: Any) -> Any:
        def hook(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any = None) -> None:
            # a model spread over several devices: every site comes back on the input's device
            captured[spec.name] = take(args, kwargs, out).detach().to(input_ids.device)
            if truncate and spec == last:
                raise _StopForward

        if pre:
            return lambda m, a, k: hook(m, a, k)
        return lambda m, a, k, o: hook(m, a, k, o)

    try:
        for spec in specs:
            point = hook_point(model.config.model_type, spec.kind)
            module = layers[spec.layer].get_submodule(point.module) if point.module else layers[spec.layer]
            hook = make_hook(spec, point.pre, point.take)
            if point.pre:
                handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(hook, with_kwargs=True))
        base = getattr(model, model.base_model_prefix, model)
        try:
            with torch.inference_mode():
                base(input_ids=input_ids, use_cache=False)
        except _StopForward:
            pass
    finally:
        for handle in handles:
            handle.remove()
    return captured
