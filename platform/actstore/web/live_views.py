"""The live panels' data: features on a text, one latent's activation over a text, and steering,
from an attached :class:`actstore.live.LiveSession` (``actstore serve STORE --model``). Pages
and JSON API render the same dicts, computed by the session's own methods (``features``,
``latent_values``, ``steer``, ``sweep``).

Nothing here writes to the store: steering computes and returns. Every parameter is checked
against ``LIVE_LIMITS`` before the model runs, and refused with a message stating the allowed
range. Text keeps its newlines (a browser sends a textarea's line breaks as CRLF: they become
LF, as typed). Without a session every function raises :class:`LiveNotAttachedError`, whose
message says how to attach one.

Steering runs on a background thread (:class:`SteerRun`) that reports each drawn token and each
finished sweep row as it happens, so the steering page and its event stream show progress.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

from actstore.errors import ActstoreError, LiveNotAttachedError, NotFoundError, RequestError
from actstore.live.checks import SEED_MAX, check_latent, check_number, check_text

__all__ = ["HOW_TO_ATTACH", "LIVE_LIMITS", "SteerRun", "activation_view", "features_view", "parse_strengths",
           "steer_params", "steer_view"]

log = logging.getLogger(__name__)

LIVE_LIMITS = {"text": 400, "top": 20, "max_new_tokens": 64, "strengths": 8, "strength": 100.0, "seed": SEED_MAX}
# One model, one call at a time: the steering hooks keep per-call state (a position clock), and
# the server runs endpoints in a thread pool.
_MODEL_LOCK = threading.Lock()
HOW_TO_ATTACH = "start the server with `actstore serve STORE --model` to load the store's model and SAEs"


def _session(session: Any) -> Any:
    if session is None:
        raise LiveNotAttachedError(f"no model is attached to this browser; {HOW_TO_ATTACH}")
    return session


def _loaded(session: Any, sae: str, latent: int) -> Any:
    """The session's SAE ``sae`` (404 when it has none) with ``latent`` in range (else 400)."""
    if sae not in session.saes:
        raise NotFoundError(f"no SAE {sae!r} is loaded; there are {sorted(session.saes)}")
    check_latent([session.saes[sae].info], sae, latent)
    return session.saes[sae]


def _text(name: str, text: str) -> str:
    """The text as typed: CRLF line breaks (how browsers send a textarea's) become LF; refused
    when empty or over the limit."""
    text = text.replace("\r\n", "\n")
    check_text(text, name)
    if len(text) > LIVE_LIMITS["text"]:
        raise RequestError(f"the {name} is {len(text)} characters long; at most {LIVE_LIMITS['text']:.0f} are allowed")
    return text


def _strength(value: float) -> float:
    limit = LIVE_LIMITS["strength"]
    return check_number("strength", value, lo=-limit, hi=limit)


def parse_strengths(raw: str) -> list[float]:
    """Comma-separated strengths (``"0,1,2,4"``), each bounded, at most ``LIVE_LIMITS['strengths']``."""
    try:
        values = [float(part) for part in raw.split(",") if part.strip()]
    except ValueError:
        raise RequestError(f"strengths must be comma-separated numbers, got {raw!r}") from None
    if not 1 <= len(values) <= LIVE_LIMITS["strengths"]:
        raise RequestError(f"give 1 to {LIVE_LIMITS['strengths']:.0f} strengths, got {len(values)}")
    return [_strength(v) for v in values]


def features_view(session: Any, text: str, *, top: int = 5) -> dict[str, Any]:
    """Per token of ``text``, its ``top`` latents across the session's SAEs
    (``LiveSession.features``: value, percentile, density, label), grouped by token."""
    session = _session(session)
    text = _text("text", text)
    check_number("top", top, lo=1, hi=LIVE_LIMITS["top"], integer=True)
    with _MODEL_LOCK:
        rows = session.features(text, top=top).to_dicts()
    tokens: list[dict[str, Any]] = []
    for row in rows:
        if not tokens or tokens[-1]["pos"] != row["pos"]:
            tokens.append({"pos": row["pos"], "token_id": row["token_id"], "token": row["token"], "latents": []})
        tokens[-1]["latents"].append({k: row[k] for k in ("rank", "sae", "latent", "value", "percentile", "density", "label")})
    return {"text": text, "top": top, "tokens": tokens}


def activation_view(session: Any, sae: str, latent: int, text: str) -> dict[str, Any]:
    """Latent ``latent`` of ``sae`` on every token of ``text`` (``LiveSession.latent_values``;
    the BOS the session puts first is left out): value, percentile among the latent's corpus
    values, and the special-token flag; ``store_max``, the latent's largest value in the
    store, is the scale the page shades by (as the corpus windows)."""
    session = _session(session)
    text = _text("text", text)
    loaded = _loaded(session, sae, latent)
    with _MODEL_LOCK:
        frame = session.latent_values(sae, latent, text)
    tokens = frame.slice(1).to_dicts()
    peak = max(tokens, key=lambda t: t["value"], default=None)
    return {"sae": sae, "latent": latent, "text": text, "tokens": tokens,
            "store_max": float(loaded.stats.max[int(latent)]),
            "max": None if peak is None or peak["value"] <= 0 else {k: peak[k] for k in ("pos", "token", "value", "percentile")}}


def steer_params(session: Any, sae: str, latent: int, prompt: str, *, strength: float, strengths: str,
                 max_new_tokens: int, seed: int) -> dict[str, Any]:
    """The steering request checked against the limits and the loaded SAEs (before the model
    runs): the keyword arguments of :func:`steer_view` and :class:`SteerRun`."""
    session = _session(session)
    if not float(_loaded(session, sae, latent).stats.max[int(latent)]) > 0:
        raise RequestError(f"latent {latent} of {sae!r} never fired in the store: strengths in multiples of its "
                            "maximum have no scale")
    check_number("max_new_tokens", max_new_tokens, lo=1, hi=LIVE_LIMITS["max_new_tokens"], integer=True)
    check_number("seed", seed, lo=0, hi=LIVE_LIMITS["seed"], integer=True)
    return {"sae": sae, "latent": int(latent), "prompt": _text("prompt", prompt), "strength": _strength(strength),
            "strengths": parse_strengths(strengths) if strengths.strip() else [], "max_new_tokens": int(max_new_tokens),
            "seed": int(seed)}


def steer_view(session: Any, **params: Any) -> dict[str, Any]:
    """Default and steered continuations of the prompt (``LiveSession.steer``, ``method="add"``,
    strength in multiples of the latent's store maximum) and, for ``strengths``, the
    dose-response frame of ``LiveSession.sweep`` (mean activation and KL per strength).
    ``params``: as :func:`steer_params` returns them."""
    return SteerRun(session, **params).start().result()


class SteerRun:
    """One steering request, run on a background thread: :meth:`events` yields its progress as
    it happens (the prompt, each drawn token, each finished sweep row, then the result or an
    error). Closing the events iterator (the client went away) stops the generation at the next
    token."""

    def __init__(self, session: Any, *, sae: str, latent: int, prompt: str, strength: float, strengths: list[float],
                 max_new_tokens: int, seed: int) -> None:
        self.session = _session(session)
        self.params: dict[str, Any] = {"sae": sae, "latent": latent, "prompt": prompt, "strength": strength,
                                       "strengths": strengths, "max_new_tokens": max_new_tokens, "seed": seed}
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue()
        self._cancelled = threading.Event()
        self._drawn: dict[str, list[int]] = {}  # per run: the ids drawn so far
        self._shown: dict[str, str] = {}  # per run: the text sent so far
        self._rows = 0  # sweep rows done

    def start(self) -> SteerRun:
        threading.Thread(target=self._work, name="actstore-steer", daemon=True).start()
        return self

    def cancel(self) -> None:
        self._cancelled.set()

    def events(self) -> Iterator[dict[str, Any]]:
        """Events until the last (``result`` or ``error``); each a dict with its ``event`` kind."""
        try:
            while True:
                event = self._queue.get()
                yield event
                if event["event"] in ("result", "error"):
                    return
        finally:
            self.cancel()

    def result(self) -> dict[str, Any]:
        """Wait for the result (errors raised as :class:`ActstoreError`)."""
        for event in self.events():
            if event["event"] == "error":
                raise ActstoreError(event["error"])
            if event["event"] == "result":
                return event["view"]
        raise AssertionError("the events ended without a result")

    # -- the worker thread ----------------------------------------------------------------------
    def _work(self) -> None:
        p, session, t0 = self.params, self.session, time.perf_counter()
        settings = {"unit": "max", "max_new_tokens": p["max_new_tokens"], "seed": p["seed"]}
        try:
            with _MODEL_LOCK:
                prompt_ids = session.tokenize(p["prompt"])
                self._queue.put({"event": "prompt", "text": session.tokenizer.decode(prompt_ids[1:]),
                                 "tokens": len(prompt_ids)})
                result = session.steer(p["prompt"], [(p["sae"], p["latent"], p["strength"])], on_token=self._token,
                                       **settings)
                self._queue.put({"event": "summary", **_summary(result)})
                sweep = session.sweep(p["prompt"], (p["sae"], p["latent"], 0.0), strengths=p["strengths"],
                                      default_ids=result.default_ids, on_token=self._token,
                                      on_row=self._row,
                                      **settings).to_dicts() if p["strengths"] else []
            view = {**p, "prompt_text": session.tokenizer.decode(prompt_ids[1:]), "default_text": result.default_text,
                    "steered_text": result.steered_text, **_summary(result), "sweep": sweep,
                    "seconds": round(time.perf_counter() - t0, 3)}
            self._queue.put({"event": "result", "view": view})
        except _Cancelled:
            self._queue.put({"event": "error", "error": "cancelled"})
        except ActstoreError as exc:
            self._queue.put({"event": "error", "error": str(exc)})
        except Exception:
            log.exception("steering %s/%s failed", p["sae"], p["latent"])
            self._queue.put({"event": "error", "error": "internal error; the server log has the details"})

    def _token(self, run: str, token_id: int) -> None:
        """A drawn token: its text as it reads after the tokens before it (a character split
        over several tokens shows once, whole) and its step; sweep tokens carry their strength."""
        if self._cancelled.is_set():
            raise _Cancelled
        extra: dict[str, Any] = {}
        if run == "sweep":
            index = self._rows
            extra = {"index": index, "strength": self.params["strengths"][index]}
            run = f"sweep-{index}"
        drawn = self._drawn.setdefault(run, [])
        drawn.append(token_id)
        text = str(self.session.tokenizer.decode(drawn)).rstrip("\ufffd")  # a partial UTF-8 character waits
        shown = self._shown.get(run, "")
        new = text[len(shown):] if text.startswith(shown) else ""
        self._shown[run] = shown + new
        self._queue.put({"event": "token", "run": run.split("-")[0], "token_id": token_id, "text": new,
                         "step": len(drawn), "of": self.params["max_new_tokens"], **extra})

    def _row(self, row: dict[str, Any]) -> None:
        self._queue.put({"event": "row", "index": self._rows, **row})
        self._rows += 1


class _Cancelled(Exception):
    """Raised inside generation when the request's client went away."""


def _summary(result: Any) -> dict[str, Any]:
    tokens = result.tokens
    steered, default = tokens.filter(tokens["run"] == "steered"), tokens.filter(tokens["run"] == "default")
    return {"steered_positions": result.steered_positions, "notes": result.notes,
            "mean_activation": {"default": default["activation"].mean(), "steered": steered["activation"].mean(),
                                "steered_before_edit": steered["activation_before"].mean()}}
