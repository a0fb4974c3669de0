"""Scorer metrics against hand-computed confusion matrices; answer parsing; prompt marking."""

from __future__ import annotations

import numpy as np
import pytest

from actstore.explain.prompts import FEW_SHOT, highlight, marked, parse_explanation, parse_judgement
from actstore.explain.scorers import (
    auroc,
    checks,
    confusion,
    precision_at_density,
    score_answers,
    similarity_scores,
)


def test_metrics_of_a_hand_computed_confusion_matrix() -> None:
    # 6 activating, 4 not: tp=4 fn=2, fp=1 tn=3
    labels = [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]
    preds = [1, 1, 1, 1, 0, 0, 1, 0, 0, 0]
    assert confusion(labels, preds) == (4, 1, 3, 2)
    s = score_answers(labels, preds, [None] * 10, density=0.01)
    assert s.recall == pytest.approx(4 / 6)
    assert s.precision == pytest.approx(4 / 5)
    assert s.balanced_accuracy == pytest.approx((4 / 6 + 3 / 4) / 2)
    assert s.f1 == pytest.approx(2 * 4 / (2 * 4 + 1 + 2))
    assert s.auroc is None and s.n == 10
    # at 1% density: r*d / (r*d + fpr*(1-d)) with fpr = 1/4
    assert s.precision_at_density == pytest.approx((4 / 6 * 0.01) / (4 / 6 * 0.01 + 0.25 * 0.99))
    assert s.precision_at_density < s.precision  # the balanced test flatters a rare latent


def test_unparsed_answers_are_left_out_and_degenerate_cases_are_none() -> None:
    s = score_answers([1, 1, 0, 0], [1, None, 0, None], [0.9, None, 0.2, None], density=0.5)
    assert s.n == 2 and s.balanced_accuracy == 1.0 and s.auroc == 1.0
    never_yes = score_answers([1, 0], [0, 0], [None, None], density=0.1)
    assert never_yes.precision is None and never_yes.f1 == 0.0 and never_yes.balanced_accuracy == 0.5
    assert score_answers([1, 1], [1, 1], [None, None], density=0.1).balanced_accuracy is None  # one class only


def test_auroc_counts_ties_half() -> None:
    assert auroc([1, 1, 0, 0], [0.9, 0.8, 0.1, 0.2]) == 1.0
    assert auroc([1, 0], [0.5, 0.5]) == 0.5
    assert auroc([1, 1, 0], [0.2, 0.9, 0.5]) == 0.5
    assert auroc([1, 1], [0.2, 0.9]) is None
    assert precision_at_density(None, 0.1, 0.5) is None and precision_at_density(0.0, 0.0, 0.5) is None


def test_informative_means_varied_answers_and_better_than_the_baseline() -> None:
    labels = [1, 1, 1, 0, 0, 0]
    good = score_answers(labels, [1, 1, 0, 0, 0, 1], [0.9, 0.8, 0.4, 0.1, 0.2, 0.6], density=0.1)
    base = score_answers(labels, [1, 0, 1, 0, 1, 0], [0.6, 0.3, 0.7, 0.4, 0.8, 0.2], density=0.1)
    c = checks(good, [1, 1, 0, 0, 0, 1], [0.9, 0.8, 0.4, 0.1, 0.2, 0.6], base)
    assert c.informative and c.yes_rate == 0.5 and c.baseline == base.auroc and c.spread == pytest.approx(float(np.std([0.9, 0.8, 0.4, 0.1, 0.2, 0.6])))
    assert not checks(good, [1, 1, 0, 0, 0, 1], [0.9] * 6, good).informative  # the baseline scores as well
    always = score_answers(labels, [1] * 6, [0.9, 0.91, 0.9, 0.88, 0.9, 0.89], density=0.1)
    said = checks(always, [1] * 6, [0.9, 0.91, 0.9, 0.88, 0.9, 0.89], None)
    assert said.yes_rate == 1.0 and not said.informative  # "yes" to every window: no evidence, whatever its AUROC
    sims = similarity_scores(labels, [0.5, 0.4, 0.45, 0.1, 0.2, 0.3])
    assert sims.auroc == 1.0 and sims.balanced_accuracy is None and sims.n == 6
    assert checks(sims, None, [0.5, 0.4, 0.45, 0.1, 0.2, 0.3], similarity_scores(labels, [0.1] * 6)).informative


def test_parsing_answers() -> None:
    assert parse_explanation("blah\n[EXPLANATION]:  the word future \n[EXPLANATION]: more") == "the word future"
    for _, answer in FEW_SHOT:  # a few-shot answer copied is no answer
        assert parse_explanation(answer) is None and parse_explanation(answer.upper() + ".") is None
    assert parse_explanation('[EXPLANATION]: the word "vexlorn" again') is None
    assert parse_explanation('[EXPLANATION]: the words "blick" or "x"') is None
    assert parse_explanation('[EXPLANATION]: the word "return"') == 'the word "return"'  # the right form, not a copy
    assert parse_explanation('[EXPLANATION]: the token " self" before a dot') == 'the token " self" before a dot'
    assert parse_explanation('[EXPLANATION]: "the keyword await"') == "the keyword await"
    assert parse_explanation("The word future.") is None
    assert parse_explanation("[EXPLANATION]:   \n") is None
    assert parse_explanation("[EXPLANATION]: the keyword <<await>> before a call") == "the keyword await before a call"
    assert parse_explanation("[EXPLANATION]: <<>>") is None
    assert parse_judgement("1") == 1 and parse_judgement(" 0.") == 0 and parse_judgement("yes, 10") is None


def test_highlight_wraps_runs_above_threshold() -> None:
    tokens, values = ["a", " b", " c", " d", " e"], [0.0, 1.0, 0.5, 0.1, 0.9]
    marks = marked(values, threshold=0.3)
    assert marks == [False, True, True, False, True]
    assert highlight(tokens, marks) == "a<< b c>> d<< e>>"
    assert marked([0.0, 0.0], threshold=0.3) == [False, False]
