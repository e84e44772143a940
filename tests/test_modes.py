"""The mode-finding proposal against closed forms: tails with several modes at random angles, named by no code."""

import numpy as np
import pytest
from scipy.stats import norm

from energy_btgm.estimate.modes import ModesConfig, estimate_tail


def _directions(k: int, dim: int, seed: int) -> np.ndarray:
    """k orthonormal directions at random angles (rows of a random rotation)."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    return q[:k]


@pytest.mark.parametrize("k, seed", [(3, 1), (5, 2)])
def test_tail_with_several_modes_is_recovered_within_its_interval(k, seed):
    """f(z) = max_j a_j·z over k orthonormal a_j: P(f ≥ t) = 1 − Φ(t)^k exactly, and the tail has one mode per
    direction, each with mass 1/k. The proposal finds the k modes and its interval covers the exact mass."""
    dim = 16
    a = _directions(k, dim, seed)
    t = 4.2
    exact = 1 - norm.cdf(t) ** k
    r = estimate_tail(lambda z: (z @ a.T).max(1), dim, t, n=40_000, cfg=ModesConfig(n=3000), seed=seed)
    assert r["ci"][0] <= exact <= r["ci"][1], (r["p"], r["ci"], exact)
    assert (r["ci"][1] - r["ci"][0]) / exact < 0.3  # and it is informative: ±15 % at a mass of about 1e-5
    # the mixture's mass per direction (each component counted for the direction its centre points to): ≈ 1/k each
    towards = (np.array([m["centre"] for m in r["modes"]]) @ a.T).argmax(1)  # (K,)
    mass = np.bincount(towards, weights=[m["weight"] for m in r["modes"]], minlength=k)
    assert np.all((mass > 0.5 / k) & (mass < 1.5 / k)), mass
    assert r["reliable"]


def test_a_single_mode_and_a_level_reached_at_once():
    dim = 8
    a = _directions(1, dim, 3)[0]
    for t in (1.0, 3.5):
        r = estimate_tail(lambda z: z @ a, dim, t, n=20_000, seed=4)
        exact = norm.sf(t)
        assert r["ci"][0] <= exact <= r["ci"][1] and r["components"] >= 1
