"""Hooks that edit a site's tensor in place of the forward pass, and count positions across
the calls of a generation (with a KV cache, each decoding step is a forward over one token)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from actstore.errors import ConfigError
from actstore.models.capture import decoder_layers
from actstore.models.sites import hook_point, parse_site

__all__ = ["PositionClock", "edit_site"]


class PositionClock:
    """Absolute positions and token ids of the current forward pass.

    A pre-hook on the model's base counts the tokens each forward receives: the prompt first,
    then one token per decoding step. Batch size 1 only.
    """

    def __init__(self) -> None:
        self.seen = 0
        self.ids = torch.zeros(0, dtype=torch.long)
        self.positions = torch.zeros(0, dtype=torch.long)

    def reset(self) -> None:
        self.seen = 0

    def _tick(self, _module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else (args[0] if args else None)
        if ids is None or ids.shape[0] != 1:
            raise ConfigError("live hooks need input_ids of batch size 1")
        self.ids = ids[0].detach()
        self.positions = torch.arange(self.seen, self.seen + ids.shape[1], device=ids.device)
        self.seen += int(ids.shape[1])

    @contextmanager
    def attached(self, model: Any) -> Iterator[PositionClock]:
        base = getattr(model, model.base_model_prefix, model)
        handle = base.register_forward_pre_hook(self._tick, with_kwargs=True)
        self.reset()
        try:
            yield self
        finally:
            handle.remove()


@contextmanager
def edit_site(model: Any, site: str, fn: Callable[[torch.Tensor], torch.Tensor | None]) -> Iterator[None]:
    """Call ``fn`` on the site's tensor [B, T, d] at every forward; a tensor it returns replaces
    the site's value for everything downstream (None leaves it as it is)."""
    spec = parse_site(site)
    point = hook_point(model.config.model_type, spec.kind)
    layer = decoder_layers(model)[spec.layer]
    module = layer.get_submodule(point.module) if point.module else layer

    def pre(_m: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        new = fn(point.take(args, kwargs, None))
        if new is None:
            return None
        return ((new, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": new})

    def post(_m: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Any:
        new = fn(point.take(args, kwargs, out))
        if new is None:
            return None
        return (new, *out[1:]) if isinstance(out, tuple) else new

    handle = (module.register_forward_pre_hook(pre, with_kwargs=True) if point.pre
              else module.register_forward_hook(post, with_kwargs=True))
    try:
        yield
    finally:
        handle.remove()
