"""``actstore serve``: the browser on a local uvicorn server (127.0.0.1 unless told otherwise).

Within a process, pages are computed in worker threads, but much of a page is Python holding
the GIL (windows, polars frames, the template), so one process uses about one core. Without
the live model the server therefore starts ``workers`` processes (one per CPU by default, at
most :data:`MAX_WORKERS`) sharing the port, each opening the store itself; uvicorn restarts one
that dies. With ``--model`` it stays one process: each would load the model.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

__all__ = ["MAX_WORKERS", "app_from_environment", "default_workers", "serve"]

log = logging.getLogger(__name__)
MAX_WORKERS = 4
_SETTINGS = "ACTSTORE_SERVE_SETTINGS"  # how the parent hands the store to worker processes


def default_workers(model: bool) -> int:
    """One process per CPU this process may use (at most :data:`MAX_WORKERS`), or one with a model."""
    if model:
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cpus, MAX_WORKERS))


def app_from_environment() -> Any:
    """The app of one worker process, for the store its parent named (uvicorn's factory)."""
    from actstore.web.app import create_app

    settings = json.loads(os.environ[_SETTINGS])
    return create_app(settings["url"], storage_options=settings["storage_options"])


def serve(url: str, *, host: str = "127.0.0.1", port: int = 8000, storage_options: dict[str, Any] | None = None,
          model: bool = False, sae_paths: dict[str, str] | None = None, workers: int | None = None) -> None:
    """Serve the store at ``url`` until interrupted. The store is opened before the server
    starts, so a wrong URL fails at once. ``model``: load the store's model and SAEs
    (:func:`actstore.live.open_session`; ``sae_paths``: SAE files to load instead of the
    store's, by name) for features on a text and steering. ``workers``: server processes
    (default :func:`default_workers`; more than one only without a model)."""
    import uvicorn

    from actstore.errors import ConfigError
    from actstore.web.app import create_app

    workers = default_workers(model) if workers is None else workers
    if workers < 1 or (model and workers > 1):
        raise ConfigError(f"workers must be >= 1, and 1 with --model (each process would load the model); got {workers}")
    session = None
    if model:
        from actstore.live import open_session

        session = open_session(url, storage_options=storage_options, sae_paths=sae_paths)
    app = create_app(url, storage_options=storage_options, session=session)  # fails here on a wrong URL
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving %s on %s: reachable from other machines (the app is read-only)", url, host)
    print(f"actstore browser for {url}: http://{'[' + host + ']' if ':' in host else host}:{port}/"
          f"{f' ({workers} processes)' if workers > 1 else ''}", flush=True)
    if workers == 1:
        uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False)
        return
    os.environ[_SETTINGS] = json.dumps({"url": url, "storage_options": storage_options or {}})
    uvicorn.run("actstore.web.server:app_from_environment", factory=True, workers=workers, host=host, port=port,
                log_level="warning", server_header=False)
