import json
import math

import numpy as np
import pytest
import torch

import criteria
from energy_btgm.btgm import LatentFlow, TuneConfig, log_normal
from energy_btgm.compare import (Proposal, RefineConfig, compare, refine, rejection_estimates, sample_proposal, tail_centres,
                                  weighted_estimates)

FAST = TuneConfig(transforms=2, hidden=32, steps=100, batch=256, n_norm=4096, n_eval=4096, max_iter=3)


def test_weighted_estimates_are_unbiased_on_a_gaussian():
    """p = N(0,1), proposal N(3,1): exceedance of 3 is 1 − Φ(3) = 1.35e-3."""
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 1.0, 200_000)
    w = np.exp(-0.5 * x ** 2 + 0.5 * (x - 3.0) ** 2)
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
    w1 = np.exp(-0.5 * x1 ** 2 + 0.5 * (x1 - 3.0) ** 2) * (x1 > 0)
    w2 = np.exp(-0.5 * x2 ** 2 + 0.5 * (x2 + 3.0) ** 2) * (x2 < 0)
    one = weighted_estimates(np.abs(x1), np.exp(-0.5 * x1 ** 2 + 0.5 * (x1 - 3.0) ** 2), 1 - exact, 3.0)
    assert one["exceedance_ci"][1] < exact  # one mode: biased low, and its interval misses
    both = weighted_estimates(np.abs(np.r_[x1, x2]), np.r_[w1, w2], 1 - exact, 3.0,
                              group=np.r_[np.zeros(len(x1), int), np.ones(len(x2), int)])
    assert both["exceedance"] == pytest.approx(exact, rel=0.03) and both["proposals"] == 2
    assert both["exceedance_ci"][0] < exact < both["exceedance_ci"][1]
    assert both["quantile"] == pytest.approx(3.0, abs=0.02) and both["quantile_ci"][0] <= 3.0 <= both["quantile_ci"][1]


class IdentityDecoder:
    """x = z: the weekly peak of a 'curve' is max(z_1, z_2), with a closed-form tail under p = N(0, I)."""

    latent_dim = 2

    def decode_kw(self, z):
        return z, z.max(1).values


def test_refinement_moves_a_crude_proposal_onto_the_tail():
    """p = N(0, I₂), f = max(z₁, z₂): P(f ≥ 2) = 1 − Φ(2)². Start from the identity flow (q = p, crude
    Monte-Carlo: relative variance 1/P − 1 ≈ 21 per sample); cross-entropy refinement toward p(z | f ≥ 2)
    must cut it several-fold and keep the estimate unbiased."""
    exact = 1 - 0.9772498680518208 ** 2
    gen, crit = IdentityDecoder(), criteria.get("weekly-peak")
    torch.manual_seed(0)
    prop = Proposal([LatentFlow(2, transforms=2, hidden=32)], False, np.ones(1), 0.0, 0)

    def rel_var(seed):
        s = sample_proposal(gen, crit, prop, 0.0, torch.Generator().manual_seed(seed), batch=200_000)
        x = s["w"] * (s["f"] >= 2.0)
        return x.var() / x.mean() ** 2, weighted_estimates(s["f"], s["w"], 1 - exact, 2.0)

    before, _ = rel_var(1)
    assert before == pytest.approx(1 / exact - 1, rel=0.1)
    evals = refine(gen, crit, prop, 2.0, RefineConfig(steps=60, batch=1024, lr=1e-2), torch.Generator().manual_seed(2))
    after, est = rel_var(3)
    assert evals == 60 * 1024
    assert after < before / 5
    assert est["exceedance_ci"][0] < exact < est["exceedance_ci"][1]
    assert est["exceedance"] == pytest.approx(exact, rel=0.02)


class NarrowGaussian:
    """A stand-in proposal flow, N(mean, sd²·I) with sd < 1: narrower than p and blind to part of the
    tail, the failure the defensive component guards against."""

    def __init__(self, mean, sd):
        self.mean, self.sd, self.dim = torch.tensor(mean), sd, len(mean)

    def sample(self, n, generator=None, spread=1.0):
        zhat = torch.randn(n, self.dim, generator=generator) * spread
        z = self.mean + self.sd * zhat
        return z, log_normal(zhat / spread) - self.dim * math.log(self.sd * spread), log_normal(z)

    def log_prob(self, z):
        return log_normal((z - self.mean) / self.sd) - self.dim * math.log(self.sd)


class DiagonalDecoder:
    """x = (s, s), s = (z₁ + z₂)/√2: the weekly peak is s ~ N(0, 1), its tail a half-plane of z."""

    latent_dim = 2

    def decode_kw(self, z):
        s = (z[:, 0] + z[:, 1]) / math.sqrt(2)
        return torch.stack([s, s], 1), s


def test_defensive_mixture_tames_the_weights_of_a_too_narrow_flow():
    """p = N(0, I₂), P(s ≥ 2.5) = 1 − Φ(2.5). A proposal N(μ₀, 0.5²·I) at the tail is narrower than
    p(z | tail) (unit variance along the boundary), so p/q grows like exp(1.5·v²) there: infinite
    variance, an estimate at the mercy of its largest weights. With the defensive component N(μ, I)
    (μ the tail mean of its draws) the weights are bounded on the tail: the relative variance drops
    to that of the optimal mean shift (≈ 3 per sample), the estimate is unbiased and covered."""
    exact = 6.209665325776132e-3
    gen, crit = DiagonalDecoder(), criteria.get("weekly-peak")
    prop = Proposal([NarrowGaussian([2.7 / math.sqrt(2)] * 2, 0.5)], False, np.ones(1), 0.0, 0)

    def draw(seed):
        s = sample_proposal(gen, crit, prop, 0.0, torch.Generator().manual_seed(seed), batch=200_000)
        x = s["w"] * (s["f"] >= 2.5)
        return x.var() / x.mean() ** 2, x.max() / x.sum(), weighted_estimates(s["f"], s["w"], 1 - exact, 2.5)

    rel_var, top, _ = draw(1)
    assert rel_var > 20 and top > 1e-3  # the flow alone: one draw carries a visible share of the estimate

    assert tail_centres(gen, crit, prop, 2.5, torch.Generator().manual_seed(2)) == 8192
    assert float(prop.centres[0][0].sum()) / math.sqrt(2) > 2.5  # the tail's mean lies beyond the threshold
    rel_var, top, est = draw(3)
    assert rel_var < 5 and top < 1e-3
    assert est["exceedance_ci"][0] < exact < est["exceedance_ci"][1]
    assert est["exceedance"] == pytest.approx(exact, rel=0.02)


def test_compare_writes_json_with_all_methods(tiny_model, tmp_path):
    r = compare(tiny_model / "models" / "vae-n10", "weekly-peak", [0.99], seconds=3, out_dir=tmp_path,
                cache_dir=tmp_path / "cache", n_reference=200_000, cfg=FAST)
    e = r["levels"]["0.99"]
    for m in ("rejection", "btgm", "reference"):
        assert "quantile" in e[m] and "exceedance" in e[m]
    for m in ("rejection", "btgm"):
        assert e[m]["decoder_evaluations"] > 0 and e[m]["seconds"] > 0 and len(e[m]["quantile_ci"]) == 2
    assert e["reference"]["exceedance"] == pytest.approx(0.01, rel=0.01)
    assert abs(e["btgm"]["exceedance"] - 0.01) < 5 * math.sqrt(e["btgm"]["exceedance_var"]) + 1e-4
    saved = json.loads((tmp_path / "compare.json").read_text())
    assert saved["levels"]["0.99"]["btgm"]["quantile"] == e["btgm"]["quantile"]
    assert len(list((tmp_path / "cache").glob("reference-*.npz"))) == 1
    with pytest.raises(ValueError, match="minimised"):
        compare(tiny_model / "models" / "vae-n10", "mae-flatness-min", [0.99], 1, tmp_path, tmp_path / "cache")


def test_far_tail_of_the_weekly_peak_uses_one_flow_per_day(tiny_model, tmp_path):
    """At 0.9999 the proposal is stratified by the day of the peak: 7 flows, and an estimate near the reference."""
    r = compare(tiny_model / "models" / "vae-n10", "weekly-peak", [0.9999], seconds=4, out_dir=tmp_path,
                cache_dir=tmp_path / "cache", n_reference=400_000)
    e = r["levels"]["0.9999"]
    assert e["btgm"]["proposals"] == 7 and e["btgm"]["decoder_evaluations"] > 0
    assert e["reference"]["tail_samples"] >= 30
    assert abs(e["btgm"]["exceedance"] - 1e-4) < 5 * math.sqrt(e["btgm"]["exceedance_var"]) + 2e-5
