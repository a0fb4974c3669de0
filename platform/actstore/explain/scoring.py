"""Scoring an explanation on a latent's held-out windows with every configured scorer.

A :class:`Worker` holds what explains and scores: the chat backend (loaded when the explainer or
an LLM judge first needs it) and the embedding model (when the embedding scorer first runs).
:func:`score_text` scores a text with each scorer and, on the very same windows, the job's
baseline (another latent's explanation), then records for each scorer its metrics and its
checks (yes-rate, spread, the baseline's number, informative) as the table's
``<scorer>_<metric>`` columns.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from actstore.explain.config import ExplainConfig
from actstore.explain.prompts import judge_messages
from actstore.explain.scorers import Scores, checks, score_answers, similarity_scores

if TYPE_CHECKING:
    from actstore.explain.backends import ChatBackend
    from actstore.explain.embedding import Embedder
    from actstore.explain.job import Job

__all__ = ["Worker", "score_text"]

WINDOWS_KEPT = 4  # jobs whose window embeddings a worker keeps (a latent's auto and profile jobs share windows)
T = TypeVar("T")
JUDGED_KEPT = 8  # judge passes a worker keeps: a latent's auto and profile jobs judge the same baseline on the same windows


class Worker:
    """The models one process explains and scores with, each loaded on first use (threads of
    one process share a worker: loading and the kept embeddings are under a lock)."""

    def __init__(self, config: ExplainConfig, *, chat: ChatBackend | None = None, embedder: Embedder | None = None) -> None:
        self.config, self._chat, self._embedder = config, chat, embedder
        self._windows: dict[int, np.ndarray] = {}
        self._judged: dict[tuple[str, str, int], list[tuple[int | None, float | None]]] = {}
        self._lock = threading.Lock()

    @property
    def chat(self) -> ChatBackend:
        with self._lock:
            if self._chat is None:
                from actstore.explain.backends import make_backend

                self._chat = make_backend(self.config.backend)
            return self._chat

    @property
    def embedder(self) -> Embedder:
        with self._lock:
            if self._embedder is None:
                from actstore.explain.embedding import Embedder

                self._embedder = Embedder(self.config.embedding)
            return self._embedder

    def similarities(self, windows: Sequence[str], text: str) -> np.ndarray:
        """Cosine similarity of ``text`` to each window (window embeddings kept for a few jobs)."""
        found = self._kept(self._windows, hash(tuple(windows)), WINDOWS_KEPT, lambda: self.embedder.embed(list(windows)))
        return found @ self.embedder.embed([text])[0]

    def judged(self, scorer: str, text: str, windows: Sequence[str]) -> list[tuple[int | None, float | None]]:
        """The ``scorer`` judge's (answer, P(1)) for ``text`` on each window; the last few passes
        are kept, so the baseline a latent's jobs share is judged once (greedy: the same answers)."""
        return self._kept(self._judged, (scorer, text, hash(tuple(windows))), JUDGED_KEPT,
                          lambda: [self.chat.judge(judge_messages(scorer, text, window)) for window in windows])

    def _kept(self, kept: dict[Any, T], key: Any, limit: int, compute: Callable[[], T]) -> T:
        """``kept[key]``, computed on a miss; the oldest entries leave beyond ``limit``."""
        found = kept.get(key)
        if found is None:
            found = compute()
            with self._lock:
                while len(kept) >= limit:
                    kept.pop(next(iter(kept)), None)
                kept[key] = found
        return found

def _scored(worker: Worker, job: Job, scorer: str, text: str) -> tuple[Scores, list[int | None] | None, list[float | None]]:
    """One scorer's metrics of ``text`` on ``job``'s windows, its 0/1 answers (None for the
    embedding scorer) and the values its AUROC ranks (P(1) or similarity)."""
    if scorer == "embedding":
        sims = worker.similarities(job.plain, text)
        return similarity_scores(job.labels, sims.tolist()), None, sims.tolist()
    shown = job.plain if scorer == "detection" else job.fuzzed
    answers = worker.judged(scorer, text, shown)
    predictions, p1 = [a[0] for a in answers], [a[1] for a in answers]
    return score_answers(job.labels, predictions, p1, density=job.density), predictions, p1


def score_text(worker: Worker, job: Job, text: str, config: ExplainConfig) -> dict[str, Any]:
    """The scorers' columns for ``text`` as an explanation of ``job``'s latent, each with its
    checks against the job's baseline (when it has one). Also scores a text from elsewhere."""
    out: dict[str, Any] = {}
    for scorer in config.scorers:
        real, predictions, values = _scored(worker, job, scorer, text)
        baseline = _scored(worker, job, scorer, job.baseline_text)[0] if job.baseline_text is not None else None
        checked = checks(real, predictions, values, baseline)
        out.update({f"{scorer}_{name}": value for name, value in {**real._asdict(), **checked._asdict()}.items()})
    return out
