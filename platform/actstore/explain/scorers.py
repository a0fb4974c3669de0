"""Scoring an explanation: metrics of a judge's 0/1 answers on held-out examples.

The judge (an LLM) reads the explanation and one example at a time and says whether the example
shows the concept (detection: plain text; fuzzing: text with tokens highlighted, the highlights
true on activating examples and random on the others). These functions turn its answers into
the metrics delphi reports (balanced accuracy, precision, recall, F1, AUROC from P(1) when the
judge gives probabilities) plus precision at the latent's natural density: a balanced 50/50
test says nothing about how many of the judge's "yes" answers would be right in running text,
where the latent fires on only ``density`` of the tokens.

The embedding scorer gives no 0/1 answers, only a similarity per window: its metric is AUROC.
Each scorer is also checked for being informative (:func:`checks`): a judge that says the same on
>= 95% of the windows, or any scorer that does not rank the real explanation above another
latent's on the same windows (the baseline), carries no evidence about this explanation, and its
numbers are kept but left out of the ranking score.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

__all__ = ["SAME_ANSWERS", "Checks", "Confusion", "Scores", "auroc", "checks", "confusion", "headline",
           "precision_at_density", "score_answers", "similarity_scores"]

SAME_ANSWERS = 0.95  # a judge giving one answer on this share of the windows (or more) is uninformative


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


def similarity_scores(labels: Sequence[int], similarities: Sequence[float]) -> Scores:
    """The embedding scorer's metrics: AUROC of the similarities, ``n``; no 0/1 answers, so the
    threshold metrics are None."""
    return Scores(None, None, None, None, auroc(labels, similarities), len(labels), None)


def headline(scores: Scores) -> float | None:
    """The number a scorer ranks by: AUROC, else (no probabilities) balanced accuracy."""
    return scores.auroc if scores.auroc is not None else scores.balanced_accuracy


class Checks(NamedTuple):
    """Whether one scorer's result carries signal: ``yes_rate`` (share of 1 answers; None for
    the embedding scorer), ``spread`` (standard deviation over the windows of P(1) or of the
    similarity; None without probabilities), ``baseline`` (the baseline explanation's
    :func:`headline`), ``informative``."""

    yes_rate: float | None
    spread: float | None
    baseline: float | None
    informative: bool


def checks(real: Scores, predictions: Sequence[int | None] | None, values: Sequence[float | None],
           baseline: Scores | None) -> Checks:
    """Informative = the real explanation has a :func:`headline`, the judge's answers vary (on
    less than :data:`SAME_ANSWERS` of the windows the same), and the baseline's headline (when
    there is one) is below the real one."""
    answers = [p for p in (predictions or []) if p is not None]
    yes = float(np.mean(answers)) if answers else None
    shown = [v for v in values if v is not None]
    spread = float(np.std(shown)) if shown and len(shown) == len(values) else None
    base = None if baseline is None else headline(baseline)
    real_value = headline(real)
    varied = predictions is None or (yes is not None and 1 - SAME_ANSWERS < yes < SAME_ANSWERS)
    above = base is None or (real_value is not None and real_value > base)
    return Checks(yes, spread, base, bool(real_value is not None and varied and above))
