"""The contrast statistics against scipy's dense reference implementations, and their planted behaviour."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from actstore.contrast.stats import (
    bh_qvalues,
    log2_rate_ratio,
    mean_difference,
    rank_sum_test,
    rate_totals,
    signed_rank_test,
)


def _sparse(dense: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(latent, value) of the non-zero cells of a [units, latents] matrix."""
    unit, latent = np.nonzero(dense)
    return latent, dense[unit, latent]


def test_rank_sum_matches_scipy_on_sparse_tied_values() -> None:
    rng = np.random.default_rng(0)
    n_latents, units_a, units_b = 40, 23, 31
    # mostly zeros, ties among the rest (small integers / 8), some negative, a few shifted latents
    a = rng.integers(-2, 6, (units_a, n_latents)) * (rng.random((units_a, n_latents)) < 0.4) / 8
    b = rng.integers(-2, 6, (units_b, n_latents)) * (rng.random((units_b, n_latents)) < 0.4) / 8
    a[:, :5] += 0.5
    a[:, 7], b[:, 7] = 0, 0  # all tied: p = 1
    got = rank_sum_test(*_sparse(a), units_a, *_sparse(b), units_b, n_latents=n_latents)
    for j in range(n_latents):
        if j == 7:
            assert got.p[j] == 1.0
            continue
        ref = sps.mannwhitneyu(a[:, j], b[:, j], method="asymptotic", use_continuity=True)
        assert got.statistic[j] == pytest.approx(ref.statistic)
        assert got.p[j] == pytest.approx(ref.pvalue, rel=1e-9)
    assert (got.p[:5] < 1e-3).all() and (got.effect[:5] > 0.8).all()


def test_signed_rank_and_mean_difference_match_scipy() -> None:
    rng = np.random.default_rng(1)
    n_units, n_latents = 37, 25
    diff = rng.integers(-4, 5, (n_units, n_latents)) * (rng.random((n_units, n_latents)) < 0.6) / 4
    diff[:, :3] = np.abs(diff[:, :3]) + 0.25  # planted: B above A on every unit
    test = signed_rank_test(*_sparse(diff), n_latents=n_latents)
    effect = mean_difference(*_sparse(diff), n_units=n_units, n_latents=n_latents)
    for j in range(n_latents):
        ref = sps.wilcoxon(diff[:, j], zero_method="wilcox", correction=True, method="approx")
        assert test.p[j] == pytest.approx(ref.pvalue, rel=1e-9)
        mean, se = diff[:, j].mean(), diff[:, j].std(ddof=1) / np.sqrt(n_units)
        assert effect.estimate[j] == pytest.approx(mean)
        assert effect.high[j] - effect.low[j] == pytest.approx(2 * 1.959964 * se, rel=1e-5)
    assert (test.p[:3] < 1e-6).all() and (test.effect[:3] == 1).all()
    assert signed_rank_test(np.zeros(0), np.zeros(0), n_latents=2).p.tolist() == [1.0, 1.0]


def test_bh_qvalues_match_scipy() -> None:
    p = np.random.default_rng(2).random(500) ** 3
    assert bh_qvalues(p) == pytest.approx(sps.false_discovery_control(p, method="bh"))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bh_qvalues(np.array([0.5, 1.5]))


def test_log2_rate_ratio_prior_and_one_unit_interval() -> None:
    """Latent 0 fires on 10% of tokens in every unit of A and never in B; latent 1 fires in
    neither; latent 2 fires 500 times in one unit of A only; latent 3 at the same rate on both."""
    units, tokens = 20, 100
    exposure = np.full(units, float(tokens))
    u = np.arange(units)
    a = rate_totals(np.r_[np.zeros(units), [2], np.full(units, 3)], np.r_[u, [0], u],
                    np.r_[np.full(units, 10.0), [500.0], np.full(units, 5.0)], exposure, n_latents=4)
    b = rate_totals(np.full(units, 3), u, np.full(units, 5.0), exposure, n_latents=4)
    effect = log2_rate_ratio(a, b, prior=1.0)
    assert effect.estimate[0] == pytest.approx(np.log2((0.1 + 1 / 4000) / (1 / 4000)))
    assert effect.low[0] > 5  # spread evenly over all units: a tight interval
    assert effect.estimate[1] == 0 and effect.low[1] < -3 and effect.high[1] > 3  # never fired: unknown
    assert effect.estimate[3] == pytest.approx(0) and -0.5 < effect.low[3] < 0 < effect.high[3] < 0.5
    assert effect.estimate[2] > 9 and effect.low[2] < 0 < effect.high[2]  # one document: no claim
    # per-unit rates of the same data: the rank test does not call latent 2 significant either
    rates_a = np.zeros((units, 4))
    rates_a[:, 0], rates_a[0, 2], rates_a[:, 3] = 0.1, 5.0, 0.05
    rates_b = np.zeros((units, 4))
    rates_b[:, 3] = 0.05
    p = rank_sum_test(*_sparse(rates_a), units, *_sparse(rates_b), units, n_latents=4).p
    assert p[0] < 1e-6 and p[2] > 0.3 and p[1] == 1 == p[3]
