"""The estimators are pure functions of f, weights and strata: tested on closed forms, without a model."""

import numpy as np
import pytest

from energy_btgm.estimate.estimators import rejection_estimates, weighted_estimates


def test_weighted_estimates_are_unbiased_on_a_gaussian():
    """p = N(0,1), proposal N(3,1): exceedance of 3 is 1 − Φ(3) = 1.35e-3."""
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 1.0, 200_000)
    w = np.exp(-0.5 * x**2 + 0.5 * (x - 3.0) ** 2)
    est = weighted_estimates(x, w, 1 - 1.349898e-3, 3.0)
    assert est["exceedance"] == pytest.approx(1.349898e-3, rel=0.02)
    assert est["exceedance_ci"][0] < 1.349898e-3 < est["exceedance_ci"][1]
    assert est["quantile"] == pytest.approx(3.0, abs=0.02) and est["quantile_ci"][0] <= 3.0 <= est["quantile_ci"][1]
    crude = rejection_estimates(rng.normal(size=200_000), 0.99, 2.3263)
    assert crude["quantile"] == pytest.approx(2.3263, abs=0.05) and crude["quantile_ci"][0] < 2.3263 < crude["quantile_ci"][1]
    assert crude["exceedance_ci"][0] < 0.01 < crude["exceedance_ci"][1]


def test_stratified_estimates_cover_both_modes_of_a_two_sided_tail():
    """p = N(0,1), f = |x|: P(f ≥ 3) = 2(1 − Φ(3)) has two modes. One proposal N(3,1) finds only half of it;
    two proposals, N(3,1) for x > 0 and N(−3,1) for x < 0 (w = 0 outside their own side), find all of it."""
    rng = np.random.default_rng(1)
    exact = 2 * 1.349898e-3
    x1, x2 = rng.normal(3.0, 1.0, 100_000), rng.normal(-3.0, 1.0, 50_000)  # unequal sizes: per-group means
    w1 = np.exp(-0.5 * x1**2 + 0.5 * (x1 - 3.0) ** 2) * (x1 > 0)
    w2 = np.exp(-0.5 * x2**2 + 0.5 * (x2 + 3.0) ** 2) * (x2 < 0)
    one = weighted_estimates(np.abs(x1), np.exp(-0.5 * x1**2 + 0.5 * (x1 - 3.0) ** 2), 1 - exact, 3.0)
    assert one["exceedance_ci"][1] < exact  # one mode: biased low, and its interval misses
    both = weighted_estimates(
        np.abs(np.r_[x1, x2]), np.r_[w1, w2], 1 - exact, 3.0, group=np.r_[np.zeros(len(x1), int), np.ones(len(x2), int)]
    )
    assert both["exceedance"] == pytest.approx(exact, rel=0.03) and both["proposals"] == 2
    assert both["exceedance_ci"][0] < exact < both["exceedance_ci"][1]
    assert both["quantile"] == pytest.approx(3.0, abs=0.02) and both["quantile_ci"][0] <= 3.0 <= both["quantile_ci"][1]
