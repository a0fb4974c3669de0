"""Steering with SAE latents during generation.

``add``: the site's activation += c x W_dec[latent]. ``clamp``: x + (v - a(x)) x W_dec[latent],
where a(x) is the latent's value on x: the SAE's error term is kept, so only that latent
changes. The hook runs at every forward, so with a KV cache it edits each generated token's
activation as it is fed back (a hook that skips one-token forwards never steers generation);
a clock counts absolute positions across the calls, so ``positions`` and the special-token
rule hold for prompt and generated tokens alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, NamedTuple

import torch

from actstore.errors import ConfigError
from actstore.live.hooks import PositionClock, edit_site
from actstore.saes.encode import SAEEncoder

__all__ = ["Edit", "Intervention", "Method", "OnToken", "Positions", "Sampling", "Steerer", "generate", "steering"]

Method = Literal["add", "clamp"]
Positions = Literal["all", "prompt", "generated"]
OnToken = Callable[[str, int], None]  # (run, token id): called as each token is drawn


class Intervention(NamedTuple):
    """Steer latent ``latent`` of SAE ``sae`` with ``strength`` (add: the coefficient; clamp: the value)."""

    sae: str
    latent: int
    strength: float


class Sampling(NamedTuple):
    """How tokens are drawn; ``temperature`` 0 is greedy. Seeded, so two runs can be compared."""

    temperature: float
    top_p: float
    seed: int
    max_new_tokens: int


@dataclass(frozen=True)
class Edit:
    """An intervention resolved against a loaded SAE: its site, coefficient and direction."""

    sae: str
    site: str
    latent: int
    coef: float  # strength in raw units (x the latent's store maximum for unit="max")
    encoder: SAEEncoder
    direction: torch.Tensor  # W_dec[latent] in the site's raw units, on the model's device
    input_scale: float

    def value(self, x: torch.Tensor) -> torch.Tensor:
        """The latent's value on activations x [T, d] (float32)."""
        return self.encoder.encode(x.float() * self.input_scale)[:, self.latent]


@dataclass
class Steerer:
    """The hook state of one pass: which positions to edit, what was edited, what was seen."""

    edits: Sequence[Edit]
    method: Method
    positions: Positions
    prompt_len: int
    special_ids: torch.Tensor
    include_special: bool
    clock: PositionClock
    active: bool = True
    record: bool = False
    steered: set[int] = field(default_factory=set)
    before: dict[int, dict[int, float]] = field(default_factory=dict)  # edit index -> position -> value
    after: dict[int, dict[int, float]] = field(default_factory=dict)

    def mask(self) -> torch.Tensor:
        """Which tokens of the current forward are steered."""
        pos = self.clock.positions
        keep = {"all": torch.ones_like(pos, dtype=torch.bool), "prompt": pos < self.prompt_len,
                "generated": pos >= self.prompt_len}[self.positions]
        if not self.include_special:
            keep &= ~torch.isin(self.clock.ids, self.special_ids.to(self.clock.ids.device))
        return keep

    def edit(self, site: str, x: torch.Tensor) -> torch.Tensor | None:
        """The hook body for one site: x [1, T, d] -> the edited tensor (None: unchanged)."""
        mine = [(i, e) for i, e in enumerate(self.edits) if e.site == site]
        mask = self.mask() if self.active else torch.zeros(x.shape[1], dtype=torch.bool, device=x.device)
        if self.record:
            self._note(self.before, mine, x[0])
        if not bool(mask.any()):
            if self.record:
                self._note(self.after, mine, x[0])
            return None
        rows = x[0, mask].float()
        for _, e in mine:
            coef = (e.coef - e.value(rows)) if self.method == "clamp" else torch.full((rows.shape[0],), e.coef, device=x.device)
            rows = rows + coef[:, None] * e.direction
        out = x.clone()
        out[0, mask] = rows.to(x.dtype)
        self.steered.update(self.clock.positions[mask].tolist())
        if self.record:
            self._note(self.after, mine, out[0])
        return out

    def _note(self, book: dict[int, dict[int, float]], mine: list[tuple[int, Edit]], x: torch.Tensor) -> None:
        for i, e in mine:
            for p, v in zip(self.clock.positions.tolist(), e.value(x).tolist(), strict=True):
                book.setdefault(i, {})[p] = v


@contextmanager
def steering(model: Any, steerer: Steerer) -> Iterator[Steerer]:
    """Hooks for every site the edits touch, and the position clock, for the duration."""
    with ExitStack() as stack:
        stack.enter_context(steerer.clock.attached(model))
        for site in dict.fromkeys(e.site for e in steerer.edits):
            stack.enter_context(edit_site(model, site, partial(steerer.edit, site)))
        yield steerer


class _Streamer:
    """transformers' streamer protocol: ``put`` gets the prompt first, then each drawn token."""

    def __init__(self, on_token: Callable[[int], None]) -> None:
        self.on_token, self.prompt_seen = on_token, False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for token in value.reshape(-1).tolist():
            self.on_token(int(token))

    def end(self) -> None:
        pass


def generate(model: Any, ids: list[int], sampling: Sampling, *, suppress: list[int],
             on_token: Callable[[int], None] | None = None) -> list[int]:
    """The generated ids after ``ids`` (seeded; ``suppress``: ids never drawn; ``on_token``:
    called with each token as it is drawn)."""
    if sampling.max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be >= 1, got {sampling.max_new_tokens}")
    if sampling.temperature < 0 or not 0 < sampling.top_p <= 1:
        raise ConfigError(f"temperature must be >= 0 and top_p in (0, 1]; got {sampling.temperature}, {sampling.top_p}")
    device = next(model.parameters()).device
    input_ids = torch.tensor([ids], device=device)
    eos = model.generation_config.eos_token_id
    kwargs: dict[str, Any] = {"max_new_tokens": sampling.max_new_tokens, "do_sample": sampling.temperature > 0,
                              "attention_mask": torch.ones_like(input_ids), "suppress_tokens": suppress or None,
                              "pad_token_id": (eos[0] if isinstance(eos, list) else eos) or 0}
    if sampling.temperature > 0:
        kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
    if on_token is not None:
        kwargs["streamer"] = _Streamer(on_token)
    torch.manual_seed(sampling.seed)
    with torch.inference_mode():
        out = model.generate(input_ids=input_ids, **kwargs)
    return [int(t) for t in out[0, len(ids):].tolist()]
