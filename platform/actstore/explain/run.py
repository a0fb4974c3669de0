"""The work of explaining one latent, as plain functions (the Ray actors and the thread pool of
``actstore.cluster.explain`` only call these).

:func:`plan_jobs` draws the examples and builds every prompt on the driver: one job per kind, an
``auto`` job (the explainer's answer) and a ``profile`` job (the latent's token profile in
words), both judged on the same held-out windows with the same baseline; :func:`run_job` asks
the backend for an explanation (auto), parses it, scores it and returns the table row. Each job
carries its cache key: the hash of (kind, prompt templates, scorer models, model, sampling,
example ids, the profile and baseline texts), so a rerun finds its results, and changing any of
them makes new ones.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from actstore.explain.config import ExplainConfig
from actstore.explain.examples import ExampleSet, draw_examples
from actstore.explain.job import Job
from actstore.explain.profile import PROFILE_AUTHOR, Profiles
from actstore.explain.prompts import (
    ANSWER_PREFIX,
    explainer_messages,
    highlight,
    marked,
    parse_explanation,
    template_hash,
)
from actstore.explain.scoring import Worker, score_text
from actstore.explain.table import utc_now

__all__ = ["cache_key", "plan_jobs", "run_job"]


def cache_key(*, sae: str, latent: int, templates: str, model: str, sampling: str, explainer_ids: list[int],
              test_ids: list[int], negative_ids: list[int], kind: str = "auto", text: str = "", baseline: str = "") -> str:
    """sha256 of every input that decides a result."""
    parts = [sae, latent, templates, model, sampling, explainer_ids, test_ids, negative_ids, kind, text, baseline]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _judged_windows(drawn: ExampleSet, config: ExplainConfig) -> tuple[list[str], list[str]]:
    """The held-out windows as the judges see them: plain (detection, embedding) and
    highlighted (fuzzing: true marks on activating windows, as many random ones on the others)."""
    ex, test = config.examples, drawn.test
    rng = np.random.default_rng([ex.seed, drawn.latent, 1])
    pos_marks = [sum(marked(v, threshold=ex.threshold)) for v in test.filter(test["label"] == 1)["values"].to_list()] or [1]
    plain, fuzzed = [], []
    for i, (tokens, values, label) in enumerate(zip(test["tokens"].to_list(), test["values"].to_list(),
                                                     test["label"].to_list(), strict=True)):
        plain.append("".join(tokens))
        if label:
            marks = marked(values, threshold=ex.threshold)
        else:
            on = set(rng.choice(len(tokens), size=min(pos_marks[i % len(pos_marks)], len(tokens)), replace=False).tolist())
            marks = [j in on for j in range(len(tokens))]
        fuzzed.append(highlight(tokens, marks))
    return plain, fuzzed


def plan_jobs(latents: Any, latent: int, config: ExplainConfig, *, density: float,
              profiles: Profiles | None = None) -> list[Job]:
    """The jobs of ``latent`` (a :class:`SaeLatents`), one per configured kind; none when it
    fires too rarely. ``profiles``: the SAE's token profiles (the profile kind, the explainer's
    evidence and the baseline need them; without, those are left out)."""
    ex = config.examples
    drawn = draw_examples(latents, latent, ex)
    if drawn is None:
        return []
    ctx_len = latents.store.meta.ctx_len
    plain, fuzzed = _judged_windows(drawn, config)
    test = drawn.test
    pos, neg = test.filter(test["label"] == 1), test.filter(test["label"] == 0)
    ids = {"explainer_ids": drawn.ids(drawn.explain, ctx_len), "test_ids": drawn.ids(pos, ctx_len),
           "negative_ids": drawn.ids(neg, ctx_len)}
    baseline = profiles.baseline(latent, ex.seed) if profiles is not None and config.baseline else None
    templates = template_hash(scorers=config.scorers, embedding=config.embedding.model.model_dump_json())
    common: dict[str, Any] = {"latent": latent, "labels": test["label"].to_list(), "plain": plain, "fuzzed": fuzzed, "density": density,
              "baseline_latent": None if baseline is None else baseline[0],
              "baseline_text": None if baseline is None else baseline[1], **ids}
    key = {"sae": latents.name, "latent": latent, "templates": templates, "model": config.model_name, **ids,
           "baseline": common["baseline_text"] or ""}
    jobs = []
    if "auto" in config.kinds:
        shown = list(zip(drawn.explain["tokens"].to_list(), drawn.explain["values"].to_list(), strict=True))
        profile = profiles.evidence(latent) if profiles is not None and config.profile_evidence else None
        messages = explainer_messages(shown, threshold=ex.threshold, show_activations=ex.show_activations, profile=profile)
        jobs.append(Job(key=cache_key(**key, sampling=config.sampling_json(), text=profile or ""), kind="auto",
                        text=None, messages=messages, **common))
    text = profiles.describe(latent) if profiles is not None and "profile" in config.kinds else None
    if text is not None:
        jobs.append(Job(key=cache_key(**key, sampling="", kind="profile", text=text), kind="profile", text=text,
                        messages=[], **common))
    return jobs


def run_job(worker: Worker, job: Job, config: ExplainConfig) -> tuple[dict[str, Any], int]:
    """The table row of ``job`` and the explainer prompt's token count (0 for a profile). An
    answer without an explanation in it (or a few-shot answer copied) is recorded with
    ``parsed`` false and its raw text, never raised."""
    raw: str | None
    if job.kind == "auto":
        prefix = ANSWER_PREFIX if config.backend.kind == "local" else ""
        raw, prompt_tokens = worker.chat.generate(job.messages, sampling=config.sampling, prefix=prefix)
        text = parse_explanation(raw)
    else:
        raw, prompt_tokens, text = job.text, 0, job.text
    row: dict[str, Any] = {
        "latent": job.latent, "text": text, "kind": job.kind,
        "author": config.model_name if job.kind == "auto" else PROFILE_AUTHOR,
        "template_hash": template_hash(scorers=config.scorers, embedding=config.embedding.model.model_dump_json()),
        "sampling": config.sampling_json() if job.kind == "auto" else None,
        "explainer_examples": job.explainer_ids, "test_examples": job.test_ids, "negative_examples": job.negative_ids,
        "parsed": text is not None, "raw": raw, "key": job.key, "created": utc_now(),
        "baseline_latent": job.baseline_latent, "baseline_text": job.baseline_text,
    }
    if text is not None:
        row.update(score_text(worker, job, text, config))
    return row, prompt_tokens
