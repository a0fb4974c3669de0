"""One explanation to make and score: what the driver plans and a worker (a Ray actor, a thread) runs."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Job"]


class Job(NamedTuple):
    """Everything a worker needs for one explanation (plain data: it travels to Ray actors).
    ``text``: the explanation of a profile job (None for auto: the explainer writes it)."""

    latent: int
    key: str
    kind: str
    text: str | None
    messages: list[dict[str, str]]
    explainer_ids: list[int]
    test_ids: list[int]
    negative_ids: list[int]
    labels: list[int]
    plain: list[str]
    fuzzed: list[str]
    density: float
    baseline_latent: int | None
    baseline_text: str | None
