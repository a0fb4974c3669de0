"""Per-latent statistics of a contrast, computed for every latent at once from sparse per-unit values.

A *unit* is what the test treats as independent: a document, or a context when a side has few
documents (the caller chooses; tokens of one document are never independent). Each side of a
contrast is a set of units; per unit and latent there is a value (a firing rate, a mean
change), zero for most pairs. Everything here takes only the non-zero pairs, as flat arrays
``latent`` / ``value`` (one entry per unit and latent, at most), plus the number of units: the
zeros are implied, so a 16k-latent SAE over thousands of documents never needs a dense
[units, latents] matrix.

What there is:

- :func:`rank_sum_test`: two independent sets of units (document set A against B). The
  Mann-Whitney U test per latent, two-sided, normal approximation with the tie correction and a
  continuity correction (``scipy.stats.mannwhitneyu(method="asymptotic")`` gives the same p on
  dense input; the tests compare them). Also the AUC (probability that a unit of A has a larger
  value than one of B, ties counting half): a rank effect size.
- :func:`signed_rank_test`: one set of units with a *paired* difference each (the same tokens
  read through two models, or two prompt formats of the same questions): the Wilcoxon
  signed-rank test per latent on the per-unit differences (zero differences dropped, as
  ``scipy.stats.wilcoxon(zero_method="wilcox", correction=True, method="approx")``).
  :func:`mean_difference` is its effect size: the mean per-unit difference with a normal
  confidence interval.
- :func:`rate_totals` and :func:`log2_rate_ratio`: the effect size of a rate contrast, log2 of
  the ratio of the two sides' firing rates with a small prior (so a latent that never fires on
  one side stays finite), and a confidence interval whose variance treats units as clusters
  (the ratio estimator's variance, at least the Poisson variance of the count, Student-t on
  the effective number of units), so a latent firing heavily in one document gets a very wide
  one.
- :func:`bh_qvalues`: Benjamini-Hochberg q-values over all latents.

A paired contrast (i22b's models on the same tokens) calls them so::

    diff = per_unit_mean_b - per_unit_mean_a          # sparse: (latent, value) where non-zero
    test = signed_rank_test(latent, diff, n_latents=d_sae)
    effect = mean_difference(latent, diff, n_units=m, n_latents=d_sae)
    q = bh_qvalues(test.p)

Normal approximations need units: with fewer than about 8 per side (or 10 non-zero differences)
p-values are approximate; :data:`MIN_UNITS` is the smallest side this module's callers accept.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy.special import ndtr, ndtri, stdtrit

__all__ = ["MIN_UNITS", "Effect", "RankTest", "RateTotals", "bh_qvalues", "log2_rate_ratio", "mean_difference",
           "rank_sum_test", "rate_totals", "signed_rank_test"]

MIN_UNITS = 8  # fewer units on a side and the normal approximation of the rank tests is too rough


class RankTest(NamedTuple):
    """A rank test of every latent: two-sided ``p``, the ``statistic`` (U of side A for
    :func:`rank_sum_test`, W+ for :func:`signed_rank_test`) and ``effect`` (the AUC of A over B,
    or the matched-pairs rank-biserial correlation in [-1, 1]); all ``[n_latents]`` float64."""

    p: np.ndarray
    statistic: np.ndarray
    effect: np.ndarray


class Effect(NamedTuple):
    """An effect size per latent with its confidence interval, all ``[n_latents]`` float64."""

    estimate: np.ndarray
    low: np.ndarray
    high: np.ndarray


class RateTotals(NamedTuple):
    """One side of a rate contrast, reduced to what the rate and its cluster variance need.

    ``events``, ``events_sq`` and ``events_exposure`` are per latent (``[n_latents]``): the sum
    over units of ``k``, ``k**2`` and ``k * n``, where ``k`` is the latent's events (firing
    tokens) in a unit and ``n`` the unit's exposure (tokens). ``exposure`` and ``exposure_sq``
    are the sums of ``n`` and ``n**2`` over all units, ``units`` their number."""

    events: np.ndarray
    events_sq: np.ndarray
    events_exposure: np.ndarray
    exposure: float
    exposure_sq: float
    units: int


def _check_sparse(latent: np.ndarray, value: np.ndarray, n_latents: int) -> tuple[np.ndarray, np.ndarray]:
    latent, value = np.asarray(latent, np.int64).reshape(-1), np.asarray(value, np.float64).reshape(-1)
    if latent.shape != value.shape:
        raise ValueError(f"latent and value must have the same length, got {latent.size} and {value.size}")
    if latent.size and (latent.min() < 0 or latent.max() >= n_latents):
        raise ValueError(f"latent ids must lie in [0, {n_latents})")
    return latent, value


def _tie_groups(latent: np.ndarray, value: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort entries by (latent, value) and give each the average 1-based rank of its tie group
    within its latent, entries weighing ``weight`` (a weight-w entry stands for w equal values).
    Returns (order, rank of each sorted entry, sum over tie groups of t**3 - t per latent)."""
    order = np.lexsort((value, latent))
    lat, val, w = latent[order], value[order], weight[order]
    if lat.size == 0:
        return order, np.zeros(0), np.zeros(0)
    new = np.ones(lat.size, bool)
    new[1:] = (lat[1:] != lat[:-1]) | (val[1:] != val[:-1])
    starts = np.flatnonzero(new)
    t = np.add.reduceat(w, starts)  # tied weight per group
    group = np.cumsum(new) - 1
    cum = np.cumsum(w) - w  # weight before each entry, overall
    lat_start = np.ones(lat.size, bool)
    lat_start[1:] = lat[1:] != lat[:-1]
    before_latent = np.maximum.accumulate(np.where(lat_start, cum, 0))  # weight of earlier latents
    below = cum[starts][group] - before_latent  # weight below the group, within the latent
    rank = below + (t[group] + 1) / 2
    ties = np.bincount(lat[starts], weights=t**3 - t, minlength=0)
    return order, rank, ties


def rank_sum_test(latent_a: np.ndarray, value_a: np.ndarray, units_a: int, latent_b: np.ndarray, value_b: np.ndarray,
                  units_b: int, *, n_latents: int) -> RankTest:
    """Mann-Whitney U of side A against side B for every latent, from sparse per-unit values.

    ``latent_x``/``value_x``: the units of side X where a latent's value is non-zero (one entry
    per unit and latent; which unit does not matter); ``units_x``: the side's number of units
    (every other unit has value 0 for that latent). Values may be negative. Two-sided p from the
    normal approximation with the tie correction and a 0.5 continuity correction; a latent
    whose values are all tied has p = 1. Cost: a sort of the non-zero entries.
    """
    la, va = _check_sparse(latent_a, value_a, n_latents)
    lb, vb = _check_sparse(latent_b, value_b, n_latents)
    if units_a < 1 or units_b < 1:
        raise ValueError(f"each side needs at least one unit, got {units_a} and {units_b}")
    nz_a = np.bincount(la, weights=(va != 0), minlength=n_latents)
    nz_b = np.bincount(lb, weights=(vb != 0), minlength=n_latents)
    ids = np.arange(n_latents)
    # the zeros of each side as one entry each, weighing as many units as they stand for
    latent = np.concatenate([la, lb, ids, ids])
    value = np.concatenate([va, vb, np.zeros(2 * n_latents)])
    weight = np.concatenate([(va != 0).astype(np.float64), (vb != 0).astype(np.float64), units_a - nz_a, units_b - nz_b])
    side_a = np.concatenate([np.ones(la.size, bool), np.zeros(lb.size, bool), np.ones(n_latents, bool),
                             np.zeros(n_latents, bool)])
    keep = weight > 0
    latent, value, weight, side_a = latent[keep], value[keep], weight[keep], side_a[keep]
    order, rank, ties = _tie_groups(latent, value, weight)
    ranks_a = np.bincount(latent[order], weights=np.where(side_a[order], weight[order] * rank, 0), minlength=n_latents)
    ties = np.pad(ties, (0, n_latents - ties.size))
    n = units_a + units_b
    u = ranks_a - units_a * (units_a + 1) / 2
    mean = units_a * units_b / 2
    var = units_a * units_b / 12 * ((n + 1) - ties / (n * (n - 1)))
    return RankTest(_two_sided(u - mean, var), u, u / (units_a * units_b))


def signed_rank_test(latent: np.ndarray, diff: np.ndarray, *, n_latents: int) -> RankTest:
    """Wilcoxon signed-rank test per latent of paired per-unit differences (B minus A), sparse:
    only the units whose difference is non-zero are given (zeros are dropped by the test).

    Two-sided p from the normal approximation with the tie correction and a 0.5 continuity
    correction; a latent with no non-zero difference has p = 1. ``effect``: the matched-pairs
    rank-biserial correlation (W+ - W-) / (W+ + W-), in [-1, 1]."""
    lat, d = _check_sparse(latent, diff, n_latents)
    keep = d != 0
    lat, d = lat[keep], d[keep]
    order, rank, ties = _tie_groups(lat, np.abs(d), np.ones(lat.size))
    w_plus = np.bincount(lat[order], weights=np.where(d[order] > 0, rank, 0), minlength=n_latents)
    ties = np.pad(ties, (0, n_latents - ties.size))
    n = np.bincount(lat, minlength=n_latents).astype(np.float64)
    total = n * (n + 1) / 2
    var = n * (n + 1) * (2 * n + 1) / 24 - ties / 48
    effect = np.divide(2 * w_plus - total, total, out=np.zeros(n_latents), where=total > 0)
    return RankTest(_two_sided(w_plus - total / 2, var), w_plus, effect)


def _two_sided(deviation: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Two-sided normal p of a rank statistic's deviation from its mean, continuity-corrected; 1 where var is 0."""
    sd = np.sqrt(np.maximum(var, 0))
    z = np.divide(np.maximum(np.abs(deviation) - 0.5, 0), sd, out=np.zeros_like(sd), where=sd > 0)
    return np.minimum(2 * ndtr(-z), 1.0)


def rate_totals(latent: np.ndarray, unit: np.ndarray, count: np.ndarray, exposure: np.ndarray, *,
                n_latents: int) -> RateTotals:
    """:class:`RateTotals` of one side from sparse per-unit event counts: ``count[i]`` events of
    ``latent[i]`` in unit ``unit[i]``, and ``exposure[u]`` tokens of unit ``u`` (every unit, also
    those where nothing fires)."""
    lat, k = _check_sparse(latent, count, n_latents)
    n = np.asarray(exposure, np.float64)
    n_of = n[np.asarray(unit, np.int64)]
    return RateTotals(events=np.bincount(lat, weights=k, minlength=n_latents),
                      events_sq=np.bincount(lat, weights=k * k, minlength=n_latents),
                      events_exposure=np.bincount(lat, weights=k * n_of, minlength=n_latents),
                      exposure=float(n.sum()), exposure_sq=float((n * n).sum()), units=int(n.size))


def _log_rate_var(side: RateTotals, smoothed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Variance of log(rate) with units as clusters, and its degrees of freedom.

    The ratio estimator's variance m/(m-1) * sum_u (k_u - R n_u)^2 / N^2 (R = K/N), over the
    smoothed rate squared (delta method), but never below the Poisson variance of a log count,
    1 / (K + 1): a side where a latent fired a few times or never is not known better than its
    count says. Degrees of freedom: the effective number of units carrying the events,
    K^2 / sum_u k_u^2 (all units when spread evenly, 1 when one unit holds them all; Carter,
    Schnepel and Steigerwald 2017), minus one, at least one; all units when nothing fired."""
    m, big_n = side.units, side.exposure
    r = side.events / big_n
    spread = np.maximum(side.events_sq - 2 * r * side.events_exposure + r * r * side.exposure_sq, 0)
    var_rate = spread * (m / max(m - 1, 1)) / big_n**2
    effective = np.divide(side.events**2, side.events_sq, out=np.full_like(side.events, float(m)),
                          where=side.events_sq > 0)
    return np.maximum(var_rate / smoothed**2, 1 / (side.events + 1)), np.maximum(effective - 1, 1)


def log2_rate_ratio(a: RateTotals, b: RateTotals, *, prior: float = 1.0, level: float = 0.95) -> Effect:
    """log2 of (rate in A) / (rate in B) per latent, with a ``level`` confidence interval.

    The prior adds ``prior`` pseudo-events spread over both sides in proportion to their
    tokens, i.e. ``prior / (N_A + N_B)`` to both rates: a latent firing on one side only gets a
    finite ratio, one firing on neither gets 0, and unequal sides are not biased. The interval
    is Student-t on the log scale with each side's variance (see :func:`_log_rate_var`) and the
    smaller side's degrees of freedom: a latent whose events sit in one or two documents gets a
    very wide one (at one degree of freedom, +-12.7 standard errors at 95%), however many
    tokens fired there, and one that never fires on a side is uncertain by its count."""
    if prior <= 0 or not 0 < level < 1:
        raise ValueError(f"prior must be > 0 and level in (0, 1), got {prior}, {level}")
    if a.exposure <= 0 or b.exposure <= 0:
        raise ValueError("each side needs tokens")
    shift = prior / (a.exposure + b.exposure)
    rate_a, rate_b = a.events / a.exposure + shift, b.events / b.exposure + shift
    estimate = np.log2(rate_a / rate_b)
    (var_a, df_a), (var_b, df_b) = _log_rate_var(a, rate_a), _log_rate_var(b, rate_b)
    half = stdtrit(np.minimum(df_a, df_b), 0.5 + level / 2) * np.sqrt(var_a + var_b) / math.log(2)
    return Effect(estimate, estimate - half, estimate + half)


def mean_difference(latent: np.ndarray, diff: np.ndarray, *, n_units: int, n_latents: int,
                    level: float = 0.95) -> Effect:
    """Mean over ``n_units`` units of a per-unit difference per latent (sparse as in
    :func:`signed_rank_test`: the non-zero ones), with a normal ``level`` interval from the
    standard error across units (the paired contrast's effect size)."""
    if n_units < 2 or not 0 < level < 1:
        raise ValueError(f"need at least 2 units and level in (0, 1), got {n_units}, {level}")
    lat, d = _check_sparse(latent, diff, n_latents)
    total = np.bincount(lat, weights=d, minlength=n_latents)
    total_sq = np.bincount(lat, weights=d * d, minlength=n_latents)
    mean = total / n_units
    var = np.maximum(total_sq - n_units * mean * mean, 0) / (n_units - 1)
    half = float(ndtri(0.5 + level / 2)) * np.sqrt(var / n_units)
    return Effect(mean, mean - half, mean + half)


def bh_qvalues(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values (adjusted p-values) of ``p``, over all of them: the smallest
    false discovery rate at which each would be declared significant (as
    ``scipy.stats.false_discovery_control(p, method="bh")``)."""
    p = np.asarray(p, np.float64)
    if p.size == 0:
        return p.copy()
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("p-values must lie in [0, 1]")
    order = np.argsort(p)
    scaled = p[order] * p.size / np.arange(1, p.size + 1)
    q = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty_like(q)
    out[order] = np.minimum(q, 1.0)
    return out
