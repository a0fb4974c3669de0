"""The live model's endpoints (``actstore serve STORE --model``): the steering page, streamed as
it is computed, its JSON answer and its event stream, features on a text and one latent's
activation over a text (the heatmap on a feature page).

The steering page is plain HTML sent in pieces as the model draws tokens (no script): the
prompt with the default continuation growing beside it, then the steered one, then each sweep
row as it is done, then the plots. Every parameter is checked before the model runs, so a bad
one is a 400 page or JSON error, never a half page. ``/steer/events`` sends the same progress
as server-sent events (``text/event-stream``), for scripts.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from starlette.concurrency import iterate_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from actstore.web import live_views
from actstore.web.plots import LineChart, line_chart

__all__ = ["ACTIVATION_PARAMS", "FEATURES_PARAMS", "STEER_PARAMS", "LivePages", "sweep_plots"]

Spec = dict[str, tuple[Callable[[str], Any], Any]]
FEATURES_PARAMS: Spec = {"text": (str, ""), "top": (int, 5)}
ACTIVATION_PARAMS: Spec = {"text": (str, "")}
STEER_PARAMS: Spec = {
    "prompt": (str, ""), "strength": (float, 4.0), "strengths": (str, "0,1,2,4"), "max_new_tokens": (int, 16),
    "seed": (int, 16)}


def sweep_plots(sweep: list[dict[str, Any]]) -> list[LineChart]:
    """The dose-response plots of a sweep: mean activation and KL against strength."""
    rows = sorted(sweep, key=lambda r: r["strength"])
    return [line_chart(f"{title} vs strength (x max)", [r["strength"] for r in rows], [r[column] for r in rows])
            for column, title in (("mean_activation", "mean activation"), ("kl", "KL from default"))] if rows else []


class LivePages:
    """The live endpoints of one app. ``render(request, template, **context)`` renders a page,
    ``context(request)`` gives a page's base context, ``params(request, spec)`` parses a query."""

    def __init__(self, session: Any, *, render: Callable[..., Response], context: Callable[[Request], dict[str, Any]],
                 params: Callable[[Request, Spec], dict[str, Any]], template: Callable[[str], Any],
                 check_latent: Callable[[str, int], None]) -> None:
        self.session, self.render, self.context, self.params = session, render, context, params
        self.template, self.check_latent = template, check_latent

    def routes(self) -> list[Route]:
        return [
            Route("/sae/{sae}/latent/{latent:int}/steer", self.steer_page),
            Route("/api/sae/{sae}/latent/{latent:int}/steer", self.steer_api),
            Route("/api/sae/{sae}/latent/{latent:int}/steer/events", self.steer_events),
            Route("/api/sae/{sae}/latent/{latent:int}/activation", self.activation_api),
            Route("/api/features", self.features_api),
        ]

    def _steer_params(self, request: Request) -> dict[str, Any]:
        params = self.params(request, STEER_PARAMS)
        return live_views.steer_params(self.session, request.path_params["sae"], request.path_params["latent"], **params)

    def steer_page(self, request: Request) -> Response:
        raw = self.params(request, STEER_PARAMS)
        sae, latent = request.path_params["sae"], request.path_params["latent"]
        self.check_latent(sae, latent)  # an unknown SAE or latent out of range: 404/400 before the model runs
        if not (raw["prompt"] and self.session is not None):
            return self.render(request, "steer.html", sae=sae, latent=latent, params=raw, stream=None)
        checked = self._steer_params(request)
        run = live_views.SteerRun(self.session, **checked).start()
        page = self.template("steer.html").generate(**self.context(request), sae=sae, latent=latent,
                                                    params={**raw, "prompt": checked["prompt"]},
                                                    strengths=checked["strengths"], stream=PageStream(run.events()),
                                                    sweep_plots=sweep_plots)
        return StreamingResponse(_cancelling(page, run), media_type="text/html; charset=utf-8",
                                 headers={"x-accel-buffering": "no", "cache-control": "no-store"})

    def steer_api(self, request: Request) -> Response:
        return JSONResponse(live_views.steer_view(self.session, **self._steer_params(request)))

    def steer_events(self, request: Request) -> Response:
        run = live_views.SteerRun(self.session, **self._steer_params(request)).start()
        events = (f"event: {e['event']}\ndata: {json.dumps(e)}\n\n" for e in run.events())
        return StreamingResponse(_cancelling(events, run), media_type="text/event-stream",
                                 headers={"x-accel-buffering": "no", "cache-control": "no-store"})

    def activation_api(self, request: Request) -> Response:
        params = self.params(request, ACTIVATION_PARAMS)
        return JSONResponse(live_views.activation_view(self.session, request.path_params["sae"],
                                                       request.path_params["latent"], params["text"]))

    def features_api(self, request: Request) -> Response:
        return JSONResponse(live_views.features_view(self.session, **self.params(request, FEATURES_PARAMS)))

    def activation(self, sae: str, latent: int, text: str) -> dict[str, Any] | None:
        """The heatmap of a feature page: None without text or without a model."""
        return live_views.activation_view(self.session, sae, latent, text) if text and self.session else None


async def _cancelling(chunks: Iterator[str], run: live_views.SteerRun) -> AsyncIterator[str]:
    """The chunks, read on a worker thread; when the client goes away, the run stops."""
    try:
        async for chunk in iterate_in_threadpool(chunks):
            yield chunk
    finally:
        run.cancel()


class PageStream:
    """A steering run's events read in page order by the template: the prompt, the default
    tokens, the steered tokens, the summary, each sweep row (its tokens, then its numbers), the
    result. An error ends every section; :meth:`result` then holds it."""

    def __init__(self, events: Iterator[dict[str, Any]]) -> None:
        self._events = events
        self._next: dict[str, Any] | None = None

    def _peek(self) -> dict[str, Any]:
        if self._next is None:
            self._next = next(self._events, {"event": "error", "error": "the run ended early"})
        return self._next

    def _take(self, kind: str) -> dict[str, Any] | None:
        """The next event of ``kind`` (skipping others before it), or None at an error."""
        while True:
            event = self._peek()
            if event["event"] == "error":
                return None
            self._next = None
            if event["event"] == kind:
                return event

    def prompt(self) -> str:
        event = self._take("prompt")
        return "" if event is None else str(event["text"])

    def tokens(self, run: str, index: int | None = None) -> Iterator[str]:
        """The text of each drawn token of ``run`` ("default", "steered", or "sweep" row ``index``)."""
        while (event := self._peek())["event"] == "token" and event["run"] == run and event.get("index") == index:
            self._next = None
            yield str(event["text"])

    def summary(self) -> dict[str, Any] | None:
        """Means of the latent on the generated tokens, the steered positions, notes."""
        return self._take("summary")

    def rows(self, strengths: list[float]) -> Iterator[tuple[float, Iterator[str], Callable[[], dict[str, Any] | None]]]:
        """Per sweep strength: the strength, its tokens as drawn, and a call giving its row."""
        for index, strength in enumerate(strengths):
            if self._peek()["event"] == "error":
                return
            yield strength, self.tokens("sweep", index), lambda: self._take("row")

    def result(self) -> dict[str, Any]:
        event = self._take("result")
        return {"error": self._peek()["error"]} if event is None else dict(event["view"])
