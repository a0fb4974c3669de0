"""A loopback HTTP proxy in front of the S3 API server that fails a set share of requests.

Every ``every``-th request is answered ``500 InternalError`` (an S3 error body) without reaching
the server, and every ``reset_every``-th has its connection closed with no answer at all. Both
are transient faults a real object store produces. ``every=0``/``reset_every=0`` fail nothing:
the proxy then only counts, and ``log`` keeps every request's method and path (request budgets).
``outage(seconds)`` makes the endpoint go away for a while, as a restarting server does: open
connections are dropped, new ones refused, then it listens again on the same port.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

ERROR_BODY = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
              b"<Message>We encountered an internal error. Please try again.</Message></Error>")


class FlakyProxy:
    def __init__(self, upstream: str, *, every: int = 25, reset_every: int = 83) -> None:
        self.upstream = urlparse(upstream)
        self.every, self.reset_every = every, reset_every
        self.requests = self.failed = self.resets = 0
        self.log: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with proxy._lock:
                    proxy._connections.add(self.connection)

            def finish(self) -> None:
                with proxy._lock:
                    proxy._connections.discard(self.connection)
                super().finish()

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with proxy._lock:
                    proxy.requests += 1
                    n = proxy.requests
                    proxy.log.append((self.command, self.path))
                if proxy.reset_every and n % proxy.reset_every == 0:
                    with proxy._lock:
                        proxy.resets += 1
                    self.close_connection = True
                    self.connection.close()
                    return
                if proxy.every and n % proxy.every == 0:
                    with proxy._lock:
                        proxy.failed += 1
                    self.send_response(500)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(ERROR_BODY)))
                    self.end_headers()
                    self.wfile.write(ERROR_BODY)
                    return
                conn = proxy._upstream_connection()
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = f"{proxy.upstream.hostname}:{proxy.upstream.port}"
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for key, value in resp.getheaders():
                    if key.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self._local = threading.local()
        self._handler = Handler
        self._connections: set[socket.socket] = set()
        self._restart: threading.Thread | None = None
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def outage(self, seconds: float) -> None:
        """Stop listening and drop every open connection now; listen again after ``seconds``."""
        port = self.server.server_address[1]
        self.server.shutdown()
        self.server.server_close()
        with self._lock:
            for conn in self._connections:
                with contextlib.suppress(OSError):  # closed by the client meanwhile
                    conn.shutdown(socket.SHUT_RDWR)

        def restart() -> None:
            time.sleep(seconds)
            self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler)
            self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
            self.thread.start()

        self._restart = threading.Thread(target=restart, daemon=True)
        self._restart.start()

    def _upstream_connection(self) -> http.client.HTTPConnection:
        """One kept-alive connection to the server per proxy thread."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=60)
        return conn

    def __enter__(self) -> FlakyProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._restart is not None:
            self._restart.join()
        self.server.shutdown()
        self.server.server_close()
