"""Importance-weight statistics (core.weights) against closed forms."""

import numpy as np
import pytest

from energy_btgm.core.weights import diagnose, ess, ess_from_log, pareto_khat, tilted_moments


def test_ess_of_equal_weights_is_n_and_of_one_weight_is_1():
    assert ess(np.full(50, 3.0)) == pytest.approx(50) and ess(np.r_[1.0, np.zeros(9)]) == pytest.approx(1)
    assert ess(np.zeros(5)) == 0.0


def test_ess_from_log_matches_ess_without_overflow():
    log_w = np.random.default_rng(0).normal(0, 2, 1000)
    assert ess_from_log(log_w) == pytest.approx(ess(np.exp(log_w)), rel=1e-10)
    assert ess_from_log(log_w + 2000.0) == pytest.approx(ess(np.exp(log_w)), rel=1e-10)  # exp(2000) would overflow


def test_tilted_moments_from_a_proposal_match_the_closed_form():
    """f ~ N(0, 1) under p, drawn from q̂ = N(1, 1): E_qβ f = β and KL(qβ‖p) = β²/2, as from p itself."""
    x = np.random.default_rng(1).normal(1.0, 1.0, 400_000)
    log_w = -0.5 * x**2 + 0.5 * (x - 1.0) ** 2  # log N(x; 0, 1) − log N(x; 1, 1)
    betas = np.array([0.5, 1.0, 2.0])
    th = tilted_moments(x, betas, log_w)
    np.testing.assert_allclose(th["mean_f"], betas, atol=0.03)
    np.testing.assert_allclose(th["kl"], betas**2 / 2, rtol=0.05)
    # the proposal sits at β = 1: there its tilted weights are flat and the ESS is the largest
    assert th["ess"][1] > th["ess"][0] and th["ess"][1] > th["ess"][2] and th["ess"][1] > 0.9 * len(x)


@pytest.mark.parametrize("alpha", [1.0, 2.0, 4.0])
def test_pareto_khat_recovers_the_tail_index_of_pareto_weights(alpha):
    """Weights with a Pareto tail of index α: k = 1/α."""
    rng = np.random.default_rng(int(alpha * 10))
    ks = [pareto_khat(np.log(rng.pareto(alpha, 20_000) + 1)) for _ in range(4)]
    assert abs(np.mean(ks) - 1 / alpha) < 0.08, ks


@pytest.mark.parametrize("var_q", [0.5, 0.8])
def test_pareto_khat_of_a_too_narrow_gaussian_proposal_is_one_minus_its_variance(var_q):
    """p = N(0, 1), q = N(0, s²) with s² < 1: w = p/q = C·exp(z²(1/s² − 1)/2), whose tail has index 1/(1 − s²)."""
    rng = np.random.default_rng(7)
    z = rng.normal(0, np.sqrt(var_q), 50_000)
    log_w = -0.5 * z**2 + 0.5 * z**2 / var_q
    assert abs(pareto_khat(log_w) - (1 - var_q)) < 0.1


def test_bounded_weights_have_a_negative_khat_and_diagnose_flags_what_fails():
    rng = np.random.default_rng(3)
    z = rng.normal(0, 2, 20_000)  # a wider proposal: bounded weights
    d = diagnose(-0.5 * z**2 + 0.5 * (z / 2) ** 2)
    assert d["pareto_k"] < 0 and d["ess"] > 5_000 and d["reliable"] and not d["problems"]
    heavy = diagnose(np.log(rng.pareto(0.8, 20_000) + 1))  # k = 1.25
    assert not heavy["reliable"] and "Pareto k̂" in heavy["problems"][0]
    few = diagnose(np.zeros(50))
    assert not few["reliable"] and "ESS 50 < 100" in few["problems"][-1]


def test_pareto_khat_with_ties_at_the_cutoff_is_finite_and_never_nan():
    """Stratified masses tie within a stratum: the ties carry no tail information and must not break the fit."""
    rng = np.random.default_rng(5)
    tied = np.r_[np.zeros(9_000), rng.normal(0, 0.3, 1_000)]  # most weights equal, a light spread above
    assert np.isfinite(pareto_khat(tied)) and pareto_khat(tied) < 0.7
    assert pareto_khat(np.r_[np.zeros(9_997), 5.0, 6.0, 7.0]) == np.inf  # three huge weights over a flat rest


def test_strata_are_diagnosed_each_on_its_own_scale():
    """Two strata with light-tailed weights on scales 1 and 1000: pooled they look heavy-tailed; per stratum
    (as the stratified estimator uses them) k̂ is low and the ESS adds up."""
    rng = np.random.default_rng(11)
    z = rng.normal(0, 2, (2, 5_000))
    log_w = -0.5 * z**2 + 0.5 * (z / 2) ** 2 + np.log([[1.0], [1000.0]])  # (2, 5000) bounded weights
    group = np.repeat([0, 1], 5_000)
    pooled, strata = diagnose(log_w.ravel()), diagnose(log_w.ravel(), group)
    assert strata["pareto_k"] < 0 and strata["reliable"]
    assert strata["ess"] == pytest.approx(ess_from_log(log_w[0]) + ess_from_log(log_w[1]))
    assert pooled["ess"] < strata["ess"] / 1.5
