"""Explainer/judge backends: a local Hugging Face chat model, or an OpenAI-compatible endpoint.

Both answer two calls: ``generate`` (the explainer's answer, stopped at the end of its first
line, and how many prompt tokens it read) and ``judge`` (a 0/1 answer with P(1) when probabilities are available). The local model
judges from its next-token logits for "0" and "1", so it always parses and always gives P(1).
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Protocol

from actstore.errors import ConfigError
from actstore.explain.config import LocalBackend, OpenAIBackend, SamplingConfig
from actstore.explain.prompts import parse_judgement

__all__ = ["ChatBackend", "LocalChat", "OpenAIChat", "make_backend"]

logger = logging.getLogger(__name__)
Messages = list[dict[str, str]]
STOP = "\n"  # an explanation is one line: generation stops at its end


class ChatBackend(Protocol):
    def generate(self, messages: Messages, *, sampling: SamplingConfig, prefix: str = "") -> tuple[str, int]:
        """The answer's first line (``prefix`` included) and the prompt's token count."""
        ...

    def judge(self, messages: Messages) -> tuple[int | None, float | None]:
        """1 or 0 (None: unparsable) and P(1) (None: no probabilities)."""
        ...


class LocalChat:
    """A transformers chat model on one device. ``prefix`` starts the assistant's turn (the
    answer format), which small models follow far more reliably than an instruction."""

    def __init__(self, config: LocalBackend, *, device: str | None = None) -> None:
        import torch
        from transformers import AutoTokenizer

        from actstore._hf import resolve_source
        from actstore.models.loading import load_model

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        resolved = resolve_source(config.model)
        self.tokenizer = AutoTokenizer.from_pretrained(resolved.path_or_id, **resolved.kwargs())
        if not getattr(self.tokenizer, "chat_template", None):
            raise ConfigError(f"model {resolved.name!r} has no chat template; use a chat (instruct) model")
        self.model = load_model(config.model, dtype=config.dtype, device=self.device)
        self.digits = [self.tokenizer.encode(d, add_special_tokens=False)[-1] for d in ("0", "1")]

    def _ids(self, messages: Messages, prefix: str = "") -> Any:
        text = str(self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)) + prefix
        return self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(self.device)

    def generate(self, messages: Messages, *, sampling: SamplingConfig, prefix: str = "") -> tuple[str, int]:
        import torch

        ids = self._ids(messages, prefix)
        torch.manual_seed(sampling.seed)
        kwargs: dict[str, Any] = {"do_sample": sampling.temperature > 0}
        if sampling.temperature > 0:
            kwargs["temperature"] = sampling.temperature
        with torch.no_grad():
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=sampling.max_new_tokens,
                                      pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
                                      stop_strings=[STOP], tokenizer=self.tokenizer, **kwargs)
        return prefix + str(self.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)), int(ids.shape[1])

    def judge(self, messages: Messages) -> tuple[int | None, float | None]:
        import torch

        with torch.no_grad():
            logits = self.model(self._ids(messages)).logits[0, -1, self.digits].float()
        p1 = float(torch.softmax(logits, -1)[1])
        return int(p1 > 0.5), p1


class OpenAIChat:
    """An OpenAI-compatible endpoint. The key is read from the environment here and handed only
    to the client; the ``openai`` client retries connection errors, 408/409/429 and 5xx with
    exponential backoff (``max_retries``). Concurrency is the caller's thread pool."""

    def __init__(self, config: OpenAIBackend) -> None:
        import openai

        key = os.environ.get(config.api_key_env)
        if not key:
            raise ConfigError(f"the environment variable {config.api_key_env} (backend.api_key_env) is not set; "
                              "export the endpoint's API key there (any non-empty value for a server without keys)")
        self.config = config
        self.client = openai.OpenAI(base_url=config.base_url, api_key=key, max_retries=config.max_retries,
                                    timeout=config.timeout_s)

    def generate(self, messages: Messages, *, sampling: SamplingConfig, prefix: str = "") -> tuple[str, int]:
        reply = self.client.chat.completions.create(
            model=self.config.model, messages=messages,  # type: ignore[arg-type]
            max_tokens=sampling.max_new_tokens, temperature=sampling.temperature, seed=sampling.seed, stop=[STOP])
        usage = reply.usage.prompt_tokens if reply.usage is not None else 0
        return reply.choices[0].message.content or "", int(usage)

    def judge(self, messages: Messages) -> tuple[int | None, float | None]:
        extra: dict[str, Any] = {"logprobs": True, "top_logprobs": 5} if self.config.logprobs else {}
        reply = self.client.chat.completions.create(
            model=self.config.model, messages=messages, max_tokens=3, temperature=0.0, **extra)  # type: ignore[arg-type]
        choice = reply.choices[0]
        return parse_judgement(choice.message.content or ""), _p1(choice.logprobs)


def _p1(logprobs: Any) -> float | None:
    """P(1) / (P(0) + P(1)) at the first answer token, from its top logprobs (delphi's AUROC input)."""
    if logprobs is None or not logprobs.content:
        return None
    top = {t.token.strip(): math.exp(t.logprob) for t in logprobs.content[0].top_logprobs or []}
    p0, p1 = top.get("0", 0.0), top.get("1", 0.0)
    return None if p0 + p1 == 0 else p1 / (p0 + p1)


def make_backend(config: LocalBackend | OpenAIBackend) -> ChatBackend:
    """The backend a config names (the local model is loaded here: call this inside the worker)."""
    if isinstance(config, OpenAIBackend):
        return OpenAIChat(config)
    return LocalChat(config)
