"""One steering call and a strength sweep: generate the default and the steered continuation
with the same seed, then read each steered latent's activation on every generated token from a
forward pass over the whole sequence (the last generated token was never fed back during
generation), and for a sweep the KL divergence from the default's next-token distributions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, Protocol

import polars as pl
import torch

from actstore.errors import ConfigError
from actstore.live.hooks import PositionClock
from actstore.live.steering import (
    Edit,
    Intervention,
    Method,
    OnToken,
    Positions,
    Sampling,
    Steerer,
    generate,
    steering,
)


class LiveSession(Protocol):
    """What steering needs of :class:`actstore.live.session.LiveSession` (which calls it)."""

    model: Any
    device: torch.device
    tokenizer: Any
    special_ids: list[int]
    suppress: list[int]
    saes: dict[str, Any]
    store: Any

    def resolve(self, interventions: Sequence[Intervention | tuple[str, int, float]], *,
                unit: Literal["raw", "max"]) -> list[Edit]: ...

    def tokenize(self, text: str | Sequence[int], *, chat: bool = False) -> list[int]: ...

    def token_texts(self, ids: Sequence[int]) -> list[str]: ...

    def special(self, ids: Sequence[int]) -> Any: ...

__all__ = ["SWEEP_SCHEMA", "TOKENS_SCHEMA", "OnRow", "SteerResult", "steer", "sweep"]

OnRow = Callable[[dict[str, Any]], None]  # a sweep row, as soon as it is done

TOKENS_SCHEMA = pl.Schema({
    "run": pl.String(), "position": pl.Int32(), "token_id": pl.Int32(), "token": pl.String(), "special": pl.Boolean(),
    "steered": pl.Boolean(),
    "sae": pl.String(), "latent": pl.Int64(), "activation_before": pl.Float32(), "activation": pl.Float32(),
})
SWEEP_SCHEMA = pl.Schema({"strength": pl.Float64(), "mean_activation": pl.Float64(), "mean_activation_before": pl.Float64(),
                          "kl": pl.Float64(), "steered_positions": pl.Int64(), "text": pl.String()})


@dataclass(frozen=True)
class SteerResult:
    """Default and steered continuations of one prompt, drawn with the same seed.

    ``steered_positions``: the absolute positions whose site activation was edited during
    generation. ``tokens``: per generated token of each run and intervention, the latent's value
    at its site before and after the edit (the default run is never edited).
    """

    prompt_ids: list[int]
    default_ids: list[int]
    steered_ids: list[int]
    default_text: str
    steered_text: str
    steered_positions: list[int]
    tokens: pl.DataFrame
    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"prompt_ids": self.prompt_ids, "default": {"text": self.default_text, "ids": self.default_ids},
                "steered": {"text": self.steered_text, "ids": self.steered_ids},
                "steered_positions": self.steered_positions, "tokens": self.tokens.to_dicts(),
                "settings": self.settings, "notes": self.notes}


@dataclass(frozen=True)
class _Options:
    method: Method
    positions: Positions
    include_special: bool
    sampling: Sampling


def _check_options(opts: _Options) -> None:
    if opts.method not in ("add", "clamp") or opts.positions not in ("all", "prompt", "generated"):
        raise ConfigError(f"method must be add|clamp and positions all|prompt|generated; got {opts.method!r}, {opts.positions!r}")


def _steerer(session: LiveSession, edits: list[Edit], opts: _Options, prompt_len: int, *, active: bool,
             record: bool) -> Steerer:
    return Steerer(edits, opts.method, opts.positions, prompt_len, torch.tensor(session.special_ids),
                   opts.include_special, PositionClock(), active=active, record=record)


def _forward(session: LiveSession, ids: list[int], steerer: Steerer) -> torch.Tensor:
    """Logits [T, vocab] (float32) of one forward over ``ids`` with ``steerer``'s hooks."""
    with steering(session.model, steerer), torch.inference_mode():
        out = session.model(input_ids=torch.tensor([ids], device=session.device), use_cache=False)
    return out.logits[0].float()


def _token_rows(session: LiveSession, run: str, ids: list[int], prompt_len: int, steerer: Steerer) -> pl.DataFrame:
    gen = list(range(prompt_len, len(ids)))
    texts = session.token_texts(ids)
    special = session.special(ids)
    rows: dict[str, list[Any]] = {k: [] for k in TOKENS_SCHEMA}
    for i, e in enumerate(steerer.edits):
        for p in gen:
            rows["run"].append(run)
            rows["position"].append(p)
            rows["token_id"].append(ids[p])
            rows["token"].append(texts[p])
            rows["special"].append(bool(special[p]))
            rows["steered"].append(p in steerer.steered)
            rows["sae"].append(e.sae)
            rows["latent"].append(e.latent)
            rows["activation_before"].append(steerer.before[i][p])
            rows["activation"].append(steerer.after[i][p])
    return pl.DataFrame(rows, schema=TOKENS_SCHEMA)


def _notes(session: LiveSession, edits: list[Edit], chat: bool) -> list[str]:
    model = str((session.store.meta.model or {}).get("name", ""))
    notes = []
    if chat and any("-pt-" in session.saes[e.sae].info.source for e in edits):
        notes.append(f"base-model (-pt-) SAEs steering {model} through its chat template: they were not trained on "
                     "chat-formatted text")
    return notes


def steer(session: LiveSession, prompt: str | Sequence[int], interventions: Sequence[Intervention | tuple[str, int, float]],
          *, method: Method, positions: Positions, unit: Literal["raw", "max"], include_special: bool,
          sampling: Sampling, chat: bool, on_token: OnToken | None = None) -> SteerResult:
    """See :meth:`LiveSession.steer`."""
    edits = session.resolve(interventions, unit=unit)
    opts = _Options(method, positions, include_special, sampling)
    _check_options(opts)
    prompt_ids = session.tokenize(prompt, chat=chat)
    default_ids = generate(session.model, prompt_ids, sampling, suppress=session.suppress,
                           on_token=_tagged(on_token, "default"))
    steered_ids, steered_at = _generate_steered(session, prompt_ids, edits, opts, _tagged(on_token, "steered"))
    before = _steerer(session, edits, opts, len(prompt_ids), active=False, record=True)
    _forward(session, prompt_ids + default_ids, before)
    after = _steerer(session, edits, opts, len(prompt_ids), active=True, record=True)
    _forward(session, prompt_ids + steered_ids, after)
    tokens = pl.concat([_token_rows(session, "default", prompt_ids + default_ids, len(prompt_ids), before),
                        _token_rows(session, "steered", prompt_ids + steered_ids, len(prompt_ids), after)])
    return SteerResult(prompt_ids, default_ids, steered_ids, _text(session, default_ids), _text(session, steered_ids),
                       steered_at, tokens, {"interventions": [list(map(str, i)) for i in interventions], "method": method,
                                            "positions": positions, "unit": unit, "include_special": include_special,
                                            **sampling._asdict(), "chat": chat}, _notes(session, edits, chat))


def _tagged(on_token: OnToken | None, run: str) -> Callable[[int], None] | None:
    return None if on_token is None else partial(on_token, run)


def _generate_steered(session: LiveSession, prompt_ids: list[int], edits: list[Edit], opts: _Options,
                      on_token: Callable[[int], None] | None = None) -> tuple[list[int], list[int]]:
    steerer = _steerer(session, edits, opts, len(prompt_ids), active=True, record=False)
    with steering(session.model, steerer):
        ids = generate(session.model, prompt_ids, opts.sampling, suppress=session.suppress, on_token=on_token)
    return ids, sorted(steerer.steered)


def _text(session: LiveSession, ids: list[int]) -> str:
    return str(session.tokenizer.decode(ids))


def sweep(session: LiveSession, prompt: str | Sequence[int], intervention: Intervention | tuple[str, int, float], *,
          strengths: Sequence[float], method: Method, positions: Positions, unit: Literal["raw", "max"],
          include_special: bool, sampling: Sampling, chat: bool, on_token: OnToken | None = None,
          on_row: OnRow | None = None, default_ids: list[int] | None = None) -> pl.DataFrame:
    """See :meth:`LiveSession.sweep`. The KL is KL(default || steered) of the next-token
    distributions over the default continuation (teacher-forced), averaged over its tokens;
    ``default_ids``: that continuation when already drawn with the same prompt and sampling."""
    if not strengths:
        raise ConfigError("give at least one strength")
    sae, latent, _ = intervention
    for strength in strengths:  # every strength checked before the first generation
        session.resolve([(sae, latent, float(strength))], unit=unit)
    opts = _Options(method, positions, include_special, sampling)
    _check_options(opts)
    prompt_ids = session.tokenize(prompt, chat=chat)
    if default_ids is None:
        default_ids = generate(session.model, prompt_ids, sampling, suppress=session.suppress,
                               on_token=_tagged(on_token, "sweep-default"))
    full = prompt_ids + default_ids
    n = len(prompt_ids)
    plain = _steerer(session, session.resolve([(sae, latent, 0.0)], unit=unit), opts, n, active=False, record=False)
    log_p = torch.log_softmax(_forward(session, full, plain)[n - 1 : -1], -1)
    rows = []
    for strength in strengths:
        edits = session.resolve([(sae, latent, float(strength))], unit=unit)
        steered_ids, steered_at = _generate_steered(session, prompt_ids, edits, opts, _tagged(on_token, "sweep"))
        on_default = _steerer(session, edits, opts, n, active=True, record=False)
        log_q = torch.log_softmax(_forward(session, full, on_default)[n - 1 : -1], -1)
        kl = float((log_p.exp() * (log_p - log_q)).sum(-1).mean()) if default_ids else 0.0
        recorded = _steerer(session, edits, opts, n, active=True, record=True)
        _forward(session, prompt_ids + steered_ids, recorded)
        gen = range(n, n + len(steered_ids))
        after = [recorded.after[0][p] for p in gen]
        before = [recorded.before[0][p] for p in gen]
        rows.append({"strength": float(strength), "mean_activation": sum(after) / max(len(after), 1),
                     "mean_activation_before": sum(before) / max(len(before), 1), "kl": kl,
                     "steered_positions": len(steered_at), "text": _text(session, steered_ids)})
        if on_row is not None:
            on_row(rows[-1])
    return pl.DataFrame(rows, schema=SWEEP_SCHEMA)
