"""The live panels' data: features on a text and steering, from an attached
:class:`actstore.live.LiveSession` (``actstore serve STORE --model``). Pages and JSON API render
the same dicts, computed by the session's own methods (``features``, ``steer``, ``sweep``).

Nothing here writes to the store: steering computes and returns. Inputs are bounded
(``LIVE_LIMITS``) and refused with a message naming the bound before the model runs. Without a
session every function raises :class:`LiveNotAttachedError`, whose message says how to attach one.
"""

from __future__ import annotations

import threading
from typing import Any

from actstore.errors import LiveNotAttachedError, RequestError

__all__ = ["HOW_TO_ATTACH", "LIVE_LIMITS", "features_view", "parse_strengths", "steer_view"]

LIVE_LIMITS = {"text": 400, "top": 20, "max_new_tokens": 64, "strengths": 8, "strength": 100.0}
# One model, one call at a time: the steering hooks keep per-call state (a position clock), and
# the server runs endpoints in a thread pool.
_MODEL_LOCK = threading.Lock()
HOW_TO_ATTACH = "start the server with `actstore serve STORE --model` to load the store's model and SAEs"


def _session(session: Any) -> Any:
    if session is None:
        raise LiveNotAttachedError(f"no model is attached to this browser; {HOW_TO_ATTACH}")
    return session


def _text(name: str, text: str) -> str:
    if not text.strip():
        raise RequestError(f"the {name} is empty")
    if len(text) > LIVE_LIMITS["text"]:
        raise RequestError(f"the {name} is {len(text)} characters long; at most {LIVE_LIMITS['text']} are allowed")
    return text


def _within(name: str, value: float, lo: float) -> None:
    if not lo <= value <= LIVE_LIMITS[name]:
        raise RequestError(f"{name} must be between {lo} and {LIVE_LIMITS[name]}, got {value}")


def parse_strengths(raw: str) -> list[float]:
    """Comma-separated strengths (``"0,1,2,4"``), each bounded, at most ``LIVE_LIMITS['strengths']``."""
    try:
        values = [float(part) for part in raw.split(",") if part.strip()]
    except ValueError:
        raise RequestError(f"strengths must be comma-separated numbers, got {raw!r}") from None
    if not 1 <= len(values) <= LIVE_LIMITS["strengths"]:
        raise RequestError(f"give 1 to {LIVE_LIMITS['strengths']} strengths, got {len(values)}")
    for value in values:
        _within("strength", abs(value), 0)
    return values


def features_view(session: Any, text: str, *, top: int = 5) -> dict[str, Any]:
    """Per token of ``text``, its ``top`` latents across the session's SAEs
    (``LiveSession.features``: value, percentile, density, label), grouped by token."""
    session = _session(session)
    _text("text", text)
    _within("top", top, 1)
    with _MODEL_LOCK:
        rows = session.features(text, top=top).to_dicts()
    tokens: list[dict[str, Any]] = []
    for row in rows:
        if not tokens or tokens[-1]["pos"] != row["pos"]:
            tokens.append({"pos": row["pos"], "token_id": row["token_id"], "token": row["token"], "latents": []})
        tokens[-1]["latents"].append({k: row[k] for k in ("rank", "sae", "latent", "value", "percentile", "density", "label")})
    return {"text": text, "top": top, "tokens": tokens}


def steer_view(session: Any, sae: str, latent: int, prompt: str, *, strength: float = 4.0,
               strengths: list[float] | None = None, max_new_tokens: int = 16, seed: int = 16) -> dict[str, Any]:
    """Default and steered continuations of ``prompt`` (``LiveSession.steer``, ``method="add"``,
    strength in multiples of the latent's store maximum) and, for ``strengths``, the
    dose-response frame of ``LiveSession.sweep`` (mean activation and KL per strength)."""
    session = _session(session)
    _text("prompt", prompt)
    _within("strength", abs(strength), 0)
    _within("max_new_tokens", max_new_tokens, 1)
    settings = {"unit": "max", "max_new_tokens": max_new_tokens, "seed": seed}
    with _MODEL_LOCK:
        result = session.steer(prompt, [(sae, latent, strength)], **settings)
        sweep = session.sweep(prompt, (sae, latent, 0.0), strengths=strengths, **settings).to_dicts() if strengths else []
    return {"sae": sae, "latent": latent, "prompt": prompt, "strength": strength, "strengths": strengths or [],
            "max_new_tokens": max_new_tokens, "seed": seed, "default_text": result.default_text,
            "steered_text": result.steered_text, "steered_positions": result.steered_positions, "notes": result.notes,
            "sweep": sweep}
