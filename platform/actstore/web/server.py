"""``actstore serve``: the browser on a local uvicorn server (127.0.0.1 unless told otherwise)."""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["serve"]

log = logging.getLogger(__name__)


def serve(url: str, *, host: str = "127.0.0.1", port: int = 8000, storage_options: dict[str, Any] | None = None) -> None:
    """Serve the store at ``url`` until interrupted. The store is opened before the server
    starts, so a wrong URL fails at once."""
    import uvicorn

    from actstore.web.app import create_app

    app = create_app(url, storage_options=storage_options)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving %s on %s: reachable from other machines (the app is read-only)", url, host)
    print(f"actstore browser for {url}: http://{'[' + host + ']' if ':' in host else host}:{port}/", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False)
