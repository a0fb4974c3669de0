"""Scoring an explanation: metrics of a judge's 0/1 answers on held-out examples.

The judge (an LLM) reads the explanation and one example at a time and says whether the example
shows the concept (detection: plain text; fuzzing: text with tokens highlighted, the highlights
true on activating examples and random on the others). These functions turn its answers into
the metrics delphi reports (balanced accuracy, precision, recall, F1, AUROC from P(1) when the
judge gives probabilities) plus precision at the latent's natural density: a balanced 50/50
test says nothing about how many of the judge's "yes" answers would be right in running text,
where the latent fires on only ``density`` of the tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

__all__ = ["Confusion", "Scores", "auroc", "confusion", "precision_at_density", "score_answers"]


class Confusion(NamedTuple):
    """Counts of (truth, prediction) pairs."""

    tp: int
    fp: int
    tn: int
    fn: int


class Scores(NamedTuple):
    """One scorer's metrics of one explanation (None where undefined, e.g. no positive answers)."""

    balanced_accuracy: float | None
    precision: float | None
    recall: float | None
    f1: float | None
    auroc: float | None
    n: int
    precision_at_density: float | None


def confusion(labels: Sequence[int], predictions: Sequence[int]) -> Confusion:
    """The confusion matrix of 0/1 ``predictions`` against 0/1 ``labels``."""
    y, p = np.asarray(labels, bool), np.asarray(predictions, bool)
    return Confusion(int((y & p).sum()), int((~y & p).sum()), int((~y & ~p).sum()), int((y & ~p).sum()))


def _ratio(num: float, den: float) -> float | None:
    return None if den == 0 else float(num / den)


def precision_at_density(recall: float | None, false_positive_rate: float | None, density: float) -> float | None:
    """Precision if examples came at the latent's natural rate: r*d / (r*d + fpr*(1-d))."""
    if recall is None or false_positive_rate is None:
        return None
    return _ratio(recall * density, recall * density + false_positive_rate * (1 - density))


def auroc(labels: Sequence[int], probabilities: Sequence[float]) -> float | None:
    """Area under the ROC curve (Mann-Whitney U, ties counted half); None without both classes."""
    y, s = np.asarray(labels, bool), np.asarray(probabilities, np.float64)
    pos, neg = s[y], s[~y]
    if pos.size == 0 or neg.size == 0:
        return None
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (pos.size * neg.size))


def score_answers(labels: Sequence[int], predictions: Sequence[int | None], probabilities: Sequence[float | None],
                  *, density: float) -> Scores:
    """Metrics of a judge's answers. ``None`` predictions (answers that did not parse) are left
    out and not counted in ``n``; AUROC needs a probability for every counted answer."""
    keep = [i for i, p in enumerate(predictions) if p is not None]
    y = [int(labels[i]) for i in keep]
    c = confusion(y, [int(predictions[i] or 0) for i in keep])
    recall = _ratio(c.tp, c.tp + c.fn)
    specificity = _ratio(c.tn, c.tn + c.fp)
    precision = _ratio(c.tp, c.tp + c.fp)
    balanced = None if recall is None or specificity is None else (recall + specificity) / 2
    f1 = _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn)
    probs = [probabilities[i] for i in keep]
    area = auroc(y, [float(p) for p in probs if p is not None]) if probs and all(p is not None for p in probs) else None
    fpr = None if specificity is None else 1 - specificity
    return Scores(balanced, precision, recall, f1, area, len(keep), precision_at_density(recall, fpr, density))
