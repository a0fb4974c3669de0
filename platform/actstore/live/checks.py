"""Checks of the live model's parameters, made before any model work: the CLI runs them against
the store's metadata before it loads the model, the session before it runs it, and the web app
(with tighter bounds) before it answers. Each failure is a :class:`ConfigError` whose message
names the parameter, its allowed range and the value given."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from actstore.errors import ConfigError

if TYPE_CHECKING:
    from actstore.store.metadata import SaeInfo

__all__ = ["SEED_MAX", "check_latent", "check_number", "check_sampling", "check_text"]

SEED_MAX = 2**32 - 1  # torch.manual_seed takes larger ones, but other generators (numpy) do not


def check_text(text: str | Sequence[int], what: str = "text") -> None:
    """Non-empty text (not only whitespace), or a non-empty sequence of integer token ids."""
    if isinstance(text, str):
        if not text.strip():
            raise ConfigError(f"the {what} is empty")
        return
    if len(text) == 0:
        raise ConfigError(f"the {what} has no token ids")
    if not all(isinstance(i, int) or (hasattr(i, "__index__") and not isinstance(i, float)) for i in text):
        raise ConfigError(f"the {what}'s token ids must be integers")


def check_number(name: str, value: Any, *, lo: float | None = None, hi: float | None = None,
                 integer: bool = False, lo_open: bool = False) -> float:
    """``value`` as a float: finite, a whole number when ``integer``, within [lo, hi]
    (``lo_open``: above lo). The message states the whole allowed range."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    ok = math.isfinite(number) and (not integer or number.is_integer())
    if ok and lo is not None:
        ok = number > lo if lo_open else number >= lo
    if ok and hi is not None:
        ok = number <= hi
    if not ok:
        if lo is not None and hi is not None:
            bounds = f" in {'(' if lo_open else '['}{_fmt(lo)}, {_fmt(hi)}]"
        elif lo is not None:
            bounds = f" {'>' if lo_open else '>='} {_fmt(lo)}"
        else:
            bounds = "" if hi is None else f" <= {_fmt(hi)}"
        raise ConfigError(f"{name} must be {'an integer' if integer else 'a finite number'}{bounds}, got {value!r}")
    return number


def _fmt(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


def check_sampling(*, temperature: Any, top_p: Any, seed: Any, max_new_tokens: Any, max_tokens: int | None = None) -> None:
    """Sampling parameters: temperature >= 0 (0: greedy), top_p in (0, 1], an integer seed in
    [0, SEED_MAX], 1 <= max_new_tokens (<= ``max_tokens`` when given)."""
    check_number("temperature", temperature, lo=0)
    check_number("top_p", top_p, lo=0, hi=1, lo_open=True)
    check_number("seed", seed, lo=0, hi=SEED_MAX, integer=True)
    check_number("max_new_tokens", max_new_tokens, lo=1, hi=max_tokens, integer=True)


def check_latent(saes: Sequence[SaeInfo], sae: str, latent: Any) -> SaeInfo:
    """The SAE named ``sae`` among ``saes``, with ``latent`` one of its latents."""
    found = {s.name: s for s in saes}
    if sae not in found:
        raise ConfigError(f"no SAE {sae!r} here; there are {sorted(found) or 'none'}")
    info = found[sae]
    number = check_number("latent", latent, integer=True)
    if not 0 <= number < info.d_sae:
        raise ConfigError(f"latent {latent} is out of range for SAE {sae!r} (d_sae={info.d_sae}: 0 to {info.d_sae - 1})")
    return info
