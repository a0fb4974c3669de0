"""``actstore serve``: the browser on a local uvicorn server (127.0.0.1 unless told otherwise)."""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["serve"]

log = logging.getLogger(__name__)


def serve(url: str, *, host: str = "127.0.0.1", port: int = 8000, storage_options: dict[str, Any] | None = None,
          model: bool = False, sae_paths: dict[str, str] | None = None) -> None:
    """Serve the store at ``url`` until interrupted. The store is opened before the server
    starts, so a wrong URL fails at once. ``model``: load the store's model and SAEs
    (:func:`actstore.live.open_session`; ``sae_paths``: SAE files to load instead of the
    store's, by name) for features on a text and steering."""
    import uvicorn

    from actstore.web.app import create_app

    session = None
    if model:
        from actstore.live import open_session

        session = open_session(url, storage_options=storage_options, sae_paths=sae_paths)
    app = create_app(url, storage_options=storage_options, session=session)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving %s on %s: reachable from other machines (the app is read-only)", url, host)
    print(f"actstore browser for {url}: http://{'[' + host + ']' if ':' in host else host}:{port}/", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False)
