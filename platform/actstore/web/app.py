"""The feature browser as an ASGI app (Starlette): HTML pages and a JSON API over one store.

Both surfaces call the functions of :mod:`actstore.web.views`; a page is its view's dict
rendered by a Jinja2 template with autoescaping on, so corpus text and labels reach the page
as text. The app is read-only (GET and HEAD only, the store opened with mode "r"), refuses
request bodies and long query strings, serves every asset itself and sends a
Content-Security-Policy that allows nothing from elsewhere.
"""

from __future__ import annotations

import functools
import logging
import re
import shlex
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import anyio
import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from actstore.errors import ActstoreError, NotFoundError, RequestError, UnitNotDoneError
from actstore.web import contrast_views, live_views, text, views
from actstore.web.across_views import across_view
from actstore.web.cache import CACHE_BYTES, Cached, ResponseCache
from actstore.web.live_pages import LivePages
from actstore.web.plots import bar_chart, rebin
from actstore.web.source import StoreSource

__all__ = ["create_app"]

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
MAX_QUERY_BYTES = 4096
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; "
                                 b"form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


def create_app(url: str, *, storage_options: dict[str, Any] | None = None, refresh_s: float = 5.0,
               session: Any = None, cache_bytes: int = CACHE_BYTES) -> Starlette:
    """The browser over the store at ``url`` (local or ``s3://``); the store is opened now, so a
    wrong URL fails here rather than on the first request. ``session``: a
    :class:`actstore.live.LiveSession` on the same store, for features on a text and steering
    (without one those panels say how to attach it). ``cache_bytes``: the bound of the cache
    of finished pages and answers (:class:`actstore.web.cache.ResponseCache`; 0: none)."""
    source = StoreSource(url, storage_options=storage_options, refresh_s=refresh_s)
    pages = _Pages(source, _templates(), session, ResponseCache(cache_bytes))
    one: _Depends = lambda r: [r.path_params["sae"]]  # noqa: E731  # what a cached answer depends on
    every: _Depends = lambda r: [s.name for s in source.store.meta.saes]  # noqa: E731
    store_only: _Depends = lambda r: []  # noqa: E731
    live = lambda name, depends: lambda r: None if r.query_params.get(name) else depends(r)  # noqa: E731  # runs the model
    cached = pages.cached
    routes = [
        Route("/", cached(pages.store, store_only)), Route("/sae/{sae}", cached(pages.sae, one)),
        Route("/sae/{sae}/latent/{latent:int}", cached(pages.feature, live("text", one))),
        Route("/search", cached(pages.search, live("mine", every))), *pages.live.routes(),
        Route("/sae/{sae}/contrast", cached(pages.contrast, one)),
        Route("/api/sae/{sae}/contrast", cached(pages.api(
            lambda r, **p: contrast_views.contrast_view(source, r.path_params["sae"], **p), CONTRAST_PARAMS), one)),
        Route("/sae/{sae}/latent/{latent:int}/layers", cached(pages.across, every)),
        Route("/api/sae/{sae}/latent/{latent:int}/layers", cached(pages.api(lambda r, **p: across_view(
            source, r.path_params["sae"], r.path_params["latent"], **p), ACROSS_PARAMS), every)),
        Route("/api/store", cached(pages.api(lambda r: views.store_view(source), {}), store_only)),
        Route("/api/sae/{sae}", cached(pages.api(
            lambda r, **p: views.sae_view(source, r.path_params["sae"], **p), SAE_PARAMS), one)),
        Route("/api/sae/{sae}/latent/{latent:int}", cached(pages.api(
            lambda r, **p: views.feature_view(source, r.path_params["sae"], r.path_params["latent"], **p), FEATURE_PARAMS),
            one)),
        Route("/api/search", cached(pages.api(lambda r, **p: views.search_view(source, **p), SEARCH_PARAMS), store_only)),
        Route("/api/search/latents", cached(pages.api(
            lambda r, **p: views.latent_search_view(source, **p), LATENT_SEARCH_PARAMS), every)),
        Route("/api/sae/{sae}/latent/{latent:int}/neuronpedia.zip", pages.export),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={ActstoreError: _error, HTTPException: _error, Exception: _error})
    app.state.source, app.state.cache = source, pages.cache
    app.add_middleware(_Guard)
    return app


# -- query parameters: typed, bounded, unknown ones refused -------------------------------------
SAE_PARAMS: dict[str, tuple[Callable[[str], Any], Any]] = {
    "sort": (str, "count"), "order": (str, "desc"), "min_density": (float, None), "max_density": (float, None),
    "label": (str, ""), "min_score": (float, None), "max_score": (float, None), "page": (int, 1), "per_page": (int, 50),
    "where": (str, "")}
FEATURE_PARAMS: dict[str, tuple[Callable[[str], Any], Any]] = {
    "k": (int, 20), "window": (int, 12), "per_doc": (int, 0), "bins": (int, 5), "per_bin": (int, 3), "cofiring": (int, 20),
    "similar": (int, 10), "where": (str, "")}
SEARCH_PARAMS: dict[str, tuple[Callable[[str], Any], Any]] = {"text": (str, ""), "limit": (int, 20), "window": (int, 12),
                                                               "where": (str, "")}
LATENT_SEARCH_PARAMS: dict[str, tuple[Callable[[str], Any], Any]] = {"text": (str, ""), "by": (str, "explanations"),
                                                                      "top": (int, 20), "where": (str, "")}
CONTRAST_PARAMS: dict[str, tuple[Callable[[str], Any], Any]] = {"a": (str, ""), "b": (str, ""), "unit": (str, "auto"),
                                                                 "top": (int, 50)}
SEARCH_PAGE_PARAMS: dict[str, tuple[Callable[[str], Any], Any]] = {
    **SEARCH_PARAMS, "mine": (str, ""), "top": (int, 5),  # + features on my text
    "find": (str, ""), "by": (str, "explanations"), "hits": (int, 20)}  # + latents by explanation or example
FEATURE_PAGE_PARAMS: dict[str, tuple[Callable[[str], Any], Any]] = {**FEATURE_PARAMS, "text": (str, "")}  # + live heatmap
EXPORT_PARAMS: dict[str, tuple[Callable[[str], Any], Any]] = {"model_id": (str, ""), "source_id": (str, "")}
ACROSS_PARAMS: dict[str, tuple[Callable[[str], Any], Any]] = {"window": (int, 2), "top": (int, 3)}


def _params(request: Request, spec: dict[str, tuple[Callable[[str], Any], Any]]) -> dict[str, Any]:
    unknown = sorted(set(request.query_params) - set(spec))
    if unknown:
        raise RequestError(f"unknown query parameters {unknown}; this page takes {sorted(spec)}")
    out = {}
    for name, (kind, default) in spec.items():
        raw = request.query_params.get(name)
        if raw is None or (raw == "" and kind is not str):
            out[name] = default
            continue
        try:
            out[name] = kind(raw)
        except ValueError:
            raise RequestError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {raw!r}") from None
    return out


_Depends = Callable[[Request], "list[str] | None"]  # the SAEs whose explanations an answer shows; None: never cache it
COMPUTING = 8  # requests a process computes at once: the rest wait on the event loop, holding no arrays


class _Pages:
    """Page and API endpoints. Pages that only read the store run through :meth:`cached`: off the
    event loop in worker threads (at most :data:`COMPUTING` at once, which bounds memory under
    load) and answered from the response cache when asked again; the live panels run in
    Starlette's thread pool (:class:`actstore.web.live_pages.LivePages`)."""

    def __init__(self, source: StoreSource, templates: Jinja2Templates, session: Any, cache: ResponseCache) -> None:
        self.source, self.templates, self.session, self.cache = source, templates, session, cache
        self._limiter: anyio.CapacityLimiter | None = None  # made on the event loop, at the first request
        self.live = LivePages(session, render=self._render, context=self._context, params=_params,
                              template=templates.env.get_template,
                              check_latent=lambda sae, latent: self.source.sae(sae).density(latent))

    def cached(self, endpoint: Callable[[Request], Response], depends: _Depends) -> Callable[[Request], Awaitable[Response]]:
        """``endpoint`` run in a worker thread, its successful answers kept in the cache under the
        request's path and query and the store's version for the SAEs ``depends`` names."""
        async def run(request: Request) -> Response:
            if self._limiter is None:
                self._limiter = anyio.CapacityLimiter(COMPUTING)

            def answer() -> Response:
                saes = depends(request) if self.cache.max_bytes else None
                key = None if saes is None else (request.url.path, request.url.query, self.source.version(saes))
                hit = None if key is None else self.cache.get(key)
                if hit is not None:
                    return Response(hit.body, media_type=hit.media_type)
                response = endpoint(request)
                if key is not None and response.status_code == 200 and response.media_type:
                    self.cache.put(key, Cached(bytes(response.body), response.media_type))
                return response

            return await anyio.to_thread.run_sync(answer, limiter=self._limiter)
        return run

    def _context(self, request: Request) -> dict[str, Any]:
        return {"store_url": self.source.store.location.url, "live": self.session is not None,
                "how_to_attach": live_views.HOW_TO_ATTACH, "root": request.scope.get("root_path", "")}

    def _render(self, request: Request, name: str, *, status_code: int = 200, **context: Any) -> Response:
        return self.templates.TemplateResponse(request, name, {**self._context(request), **context},
                                               status_code=status_code)

    def store(self, request: Request) -> Response:
        _params(request, {})
        view = views.store_view(self.source)
        charts = {}
        for sae in view["saes"]:
            counts = sae["l0_hist"]["counts"]
            l0, edges = rebin(counts, list(range(len(counts) + 1)), most=64)
            charts[sae["name"]] = [
                bar_chart("L0: latents firing per token", l0, edges, fmt="{:.0f}"),
                bar_chart("density of latents: log10(fraction of tokens fired)", sae["density_hist"]["counts"],
                          sae["density_hist"]["log10_edges"], fmt="{:.1f}", trim=False),
            ]
        return self._render(request, "store.html", view=view, charts=charts)

    def sae(self, request: Request) -> Response:
        params = _params(request, SAE_PARAMS)
        view = views.sae_view(self.source, request.path_params["sae"], **params)

        def link(changes: dict[str, Any]) -> str:
            """This table's URL with some parameters changed (unset ones left out)."""
            query = {k: v for k, v in {**params, **changes}.items() if v is not None and v != ""}
            return f"{request.scope.get('root_path', '')}/sae/{quote(view['sae'], safe='')}?{urlencode(query)}"

        return self._render(request, "sae.html", view=view, params=params, link=link, sort_columns=views.SORT_COLUMNS)

    def feature(self, request: Request) -> Response:
        params = _params(request, FEATURE_PAGE_PARAMS)
        text = params.pop("text")
        view = views.feature_view(self.source, request.path_params["sae"], request.path_params["latent"], **params)
        activation = self.live.activation(view["sae"], view["latent"], text)
        hist = bar_chart("activation histogram (log-spaced bins)", view["stats"]["hist"],
                         [0.0, *view["hist_edges"], float("inf")], log_y=True)
        return self._render(request, "feature.html", view=view, hist=hist, export=_export_defaults(self.source, view),
                            activation=activation, activation_text=text)

    def across(self, request: Request) -> Response:
        view = across_view(self.source, request.path_params["sae"], request.path_params["latent"],
                           **_params(request, ACROSS_PARAMS))
        return self._render(request, "across.html", view=view)

    def search(self, request: Request) -> Response:
        params = _params(request, SEARCH_PAGE_PARAMS)
        mine, top = params.pop("mine"), params.pop("top")
        find = {"text": params.pop("find"), "by": params.pop("by"), "top": params.pop("hits"), "where": params["where"]}
        view = views.search_view(self.source, **params) if params["text"] else None
        found = views.latent_search_view(self.source, **find) if find["text"] else None
        features = live_views.features_view(self.session, mine, top=top) if mine and self.session else None
        return self._render(request, "search.html", view=view, params=params, mine=mine, top=top, features=features,
                            find=find, found=found, search_by=views.SEARCH_BY)

    def contrast(self, request: Request) -> Response:
        """Two document sets compared: the form, then the sides, a volcano plot and the ranked
        table; a filter that cannot be read comes back in the form with its one-line error."""
        params = _params(request, CONTRAST_PARAMS)
        sae = request.path_params["sae"]
        self.source.sae(sae)  # an unknown SAE is a 404
        result, error = None, None
        if params["a"]:
            try:
                views.bounded("top", params["top"])
                result = contrast_views.contrast_result(self.source, sae, a=params["a"], b=params["b"], unit=params["unit"])
            except ActstoreError as exc:
                error = str(exc)
        columns = self.source.store.documents().collect_schema().names()
        return self._render(request, "contrast.html", sae=sae, params=params, units=contrast_views.UNITS, error=error,
                            columns=columns,
                            view=result.to_dict(top=params["top"]) if result else None,
                            volcano=contrast_views.volcano(result) if result else None,
                            status_code=400 if error else 200)

    def export(self, request: Request) -> Response:
        params = _params(request, EXPORT_PARAMS)
        sae, latent = request.path_params["sae"], request.path_params["latent"]
        defaults = _export_defaults(self.source, {"sae": sae, "site": self.source.sae(sae).info.site})
        model_id, source_id = params["model_id"] or defaults["model_id"], params["source_id"] or defaults["source_id"]
        body = views.neuronpedia_zip(self.source, sae, latent, model_id=model_id, source_id=source_id)
        name = f"neuronpedia-{source_id}-{latent}.zip"
        return Response(body, media_type="application/zip", headers={"content-disposition": f'attachment; filename="{name}"'})

    @staticmethod
    def api(view: Callable[..., dict[str, Any]], spec: dict[str, tuple[Callable[[str], Any], Any]]) -> Callable[[Request], Response]:
        def endpoint(request: Request) -> Response:
            return JSONResponse(view(request, **_params(request, spec)))
        return endpoint


def _export_defaults(source: StoreSource, view: dict[str, Any]) -> dict[str, str]:
    """Neuronpedia ids to prefill: the model's short name and ``<layer>-actstore-<sae>``."""
    model = (source.store.meta.model or {}).get("name") or (source.store.meta.model or {}).get("id") or "model"
    layer = re.search(r"blocks\.(\d+)\.", view["site"])
    short = re.sub(r"[^a-z0-9_-]", "-", str(model).rstrip("/").rsplit("/", 1)[-1].lower())[:100] or "model"
    tail = re.sub(r"[^A-Za-z0-9_-]", "-", f"actstore-{view['sae']}")
    return {"model_id": short, "source_id": f"{layer.group(1) if layer else 0}-{tail}"[:100]}


# -- errors: JSON under /api, a page elsewhere ----------------------------------------------------
def _status(exc: Exception) -> int:
    if isinstance(exc, HTTPException):
        return exc.status_code
    if isinstance(exc, NotFoundError | LookupError) and not isinstance(exc, UnitNotDoneError):
        return 404
    if isinstance(exc, UnitNotDoneError):
        return 409
    if isinstance(exc, ActstoreError):
        return 400
    return 500


def _error(request: Request, exc: Exception) -> Response:
    status = _status(exc)
    if status == 500:
        log.exception("error serving %s", request.url.path, exc_info=exc)
        message = "internal error; the server log has the details"
    else:
        message = str(exc.detail) if isinstance(exc, HTTPException) else str(exc)
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": message, "status": status}, status_code=status)
    return _templates().TemplateResponse(request, "error.html", {"message": message, "status": status, "store_url": "",
                                                                    "root": request.scope.get("root_path", "")},
                                      status_code=status)


class _Guard:
    """Read-only and small: GET/HEAD only, no request body, a bounded query string; adds the
    security headers to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        refusal = None
        if scope["method"] not in ("GET", "HEAD"):
            refusal = (405, f"this server is read-only: {scope['method']} is not allowed")
        elif int(headers.get(b"content-length", b"0") or 0) > 0 or b"transfer-encoding" in headers:
            refusal = (413, "requests may not carry a body")
        elif len(scope.get("query_string", b"")) > MAX_QUERY_BYTES:
            refusal = (414, f"the query string is longer than {MAX_QUERY_BYTES} bytes")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        if refusal is not None:
            response = JSONResponse({"error": refusal[1], "status": refusal[0]}, status_code=refusal[0],
                                    headers={"allow": "GET, HEAD"} if refusal[0] == 405 else None)
            await response(scope, receive, with_headers)
            return
        await self.app(scope, receive, with_headers)


# -- templates --------------------------------------------------------------------------------------
@functools.cache
def _templates() -> Jinja2Templates:
    """One template environment per process, autoescaping everything."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters.update(visible=text.visible, bidi=text.bidi, runs=text.runs, shade=text.shade)
    env.filters["num"] = lambda v, f="{:.4g}": "-" if v is None else f.format(v)
    env.filters["shquote"] = shlex.quote  # a command line to copy: the store URL and SAE name as one word each
    return Jinja2Templates(env=env)
