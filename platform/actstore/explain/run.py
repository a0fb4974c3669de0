"""The work of explaining one latent, as plain functions (the Ray actors and the thread pool of
``actstore.cluster.explain`` only call these).

:func:`plan_job` draws the examples and builds every prompt on the driver; :func:`run_job` asks
the backend for an explanation, parses it, has the judges score it and returns the table row.
Each job carries its cache key: the hash of (prompt templates, model, sampling, example ids),
so a rerun finds its results, and changing any of them makes new ones.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, NamedTuple

import numpy as np

from actstore.explain.backends import ChatBackend
from actstore.explain.config import ExplainConfig
from actstore.explain.examples import draw_examples
from actstore.explain.prompts import (
    ANSWER_PREFIX,
    explainer_messages,
    highlight,
    judge_messages,
    marked,
    parse_explanation,
    template_hash,
)
from actstore.explain.scorers import score_answers
from actstore.explain.table import utc_now

__all__ = ["Job", "cache_key", "plan_job", "run_job", "score_text"]


class Job(NamedTuple):
    """Everything a worker needs for one latent (plain data: it travels to Ray actors)."""

    latent: int
    key: str
    messages: list[dict[str, str]]
    explainer_ids: list[int]
    test_ids: list[int]
    negative_ids: list[int]
    labels: list[int]
    plain: list[str]
    fuzzed: list[str]
    density: float


def cache_key(*, sae: str, latent: int, templates: str, model: str, sampling: str, explainer_ids: list[int],
              test_ids: list[int], negative_ids: list[int]) -> str:
    """sha256 of every input that decides a result."""
    parts = [sae, latent, templates, model, sampling, explainer_ids, test_ids, negative_ids]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def plan_job(latents: Any, latent: int, config: ExplainConfig, *, density: float) -> Job | None:
    """The job of ``latent`` (a :class:`SaeLatents`); None when it fires too rarely."""
    ex = config.examples
    drawn = draw_examples(latents, latent, ex)
    if drawn is None:
        return None
    ctx_len = latents.store.meta.ctx_len
    shown = list(zip(drawn.explain["tokens"].to_list(), drawn.explain["values"].to_list(), strict=True))
    messages = explainer_messages(shown, threshold=ex.threshold, show_activations=ex.show_activations)
    test = drawn.test
    rng = np.random.default_rng([ex.seed, latent, 1])
    pos_marks = [sum(marked(v, threshold=ex.threshold)) for v in test.filter(test["label"] == 1)["values"].to_list()] or [1]
    plain, fuzzed = [], []
    for i, (tokens, values, label) in enumerate(zip(test["tokens"].to_list(), test["values"].to_list(),
                                                     test["label"].to_list(), strict=True)):
        plain.append("".join(tokens))
        if label:
            marks = marked(values, threshold=ex.threshold)
        else:  # as many random highlights as an activating example has true ones
            on = set(rng.choice(len(tokens), size=min(pos_marks[i % len(pos_marks)], len(tokens)), replace=False).tolist())
            marks = [j in on for j in range(len(tokens))]
        fuzzed.append(highlight(tokens, marks))
    pos, neg = test.filter(test["label"] == 1), test.filter(test["label"] == 0)
    ids = {"explainer_ids": drawn.ids(drawn.explain, ctx_len), "test_ids": drawn.ids(pos, ctx_len),
           "negative_ids": drawn.ids(neg, ctx_len)}
    key = cache_key(sae=latents.name, latent=latent, templates=template_hash(scorers=config.scorers),
                    model=config.model_name, sampling=config.sampling_json(), **ids)
    return Job(latent, key, messages, labels=test["label"].to_list(), plain=plain, fuzzed=fuzzed, density=density, **ids)


def run_job(backend: ChatBackend, job: Job, config: ExplainConfig) -> tuple[dict[str, Any], int]:
    """The table row of ``job`` and the explainer prompt's token count. An answer without an
    explanation in it is recorded with ``parsed`` false and its raw text, never raised."""
    raw, prompt_tokens = backend.generate(job.messages, sampling=config.sampling, prefix=ANSWER_PREFIX
                                          if config.backend.kind == "local" else "")
    text = parse_explanation(raw)
    row: dict[str, Any] = {
        "latent": job.latent, "text": text, "kind": "auto", "author": config.model_name,
        "template_hash": template_hash(scorers=config.scorers), "sampling": config.sampling_json(),
        "explainer_examples": job.explainer_ids, "test_examples": job.test_ids, "negative_examples": job.negative_ids,
        "parsed": text is not None, "raw": raw, "key": job.key, "created": utc_now(),
    }
    if text is not None:
        row.update(score_text(backend, job, text, config))
    return row, prompt_tokens


def score_text(backend: ChatBackend, job: Job, text: str, config: ExplainConfig) -> dict[str, Any]:
    """The judges' scores of ``text`` as an explanation of ``job``'s latent (the table's
    ``<scorer>_<metric>`` columns). Also scores a text from elsewhere, e.g. a shuffled baseline."""
    out: dict[str, Any] = {}
    for scorer in config.scorers:
        shown = job.plain if scorer == "detection" else job.fuzzed
        answers = [backend.judge(judge_messages(scorer, text, example)) for example in shown]
        scores = score_answers(job.labels, [a[0] for a in answers], [a[1] for a in answers], density=job.density)
        out.update({f"{scorer}_{name}": value for name, value in scores._asdict().items()})
    return out
