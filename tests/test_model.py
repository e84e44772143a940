"""The observation model, the feature scaling and the second-stage latent prior against closed forms."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from energy_btgm.core.flow import LatentFlow
from energy_btgm.errors import ParameterError
from energy_btgm.model.train import fit_prior, prior_nll, select_prior
from energy_btgm.model.vae import VAE, Generator, Scaler, VAEConfig


def small_vae(heteroscedastic=True):
    return VAE(VAEConfig(n_features=3, latent_dim=2, hidden=8, blocks=1, prior_transforms=0, heteroscedastic=heteroscedastic))


def test_observation_likelihood_is_gaussian():
    g = torch.Generator().manual_seed(0)
    x, mean, logvar = (torch.randn(5, 3, generator=g, dtype=torch.float64) for _ in range(3))
    want = torch.distributions.Normal(mean, (0.5 * logvar).exp()).log_prob(x).sum(-1)
    assert torch.allclose(VAE.obs_log_prob(x, mean, logvar), want, atol=1e-9)


def test_generated_curves_are_draws_of_the_observation_model():
    """Decoder output fixed: mean 5 and log σ² = −2 + (0, 1, −1) per feature on the model's scale; scaler ×2
    on power 1. Decoder means are 10 kW; draws are N(10, 4σ²) feature by feature, the noise from the generator."""
    vae = small_vae()
    last = vae.decoder[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias[:] = torch.tensor([5.0, 5.0, 5.0, 0.0, 1.0, -1.0])
    gen = Generator(vae, Scaler(np.zeros(3, np.float32), np.full(3, 2.0, np.float32), 1.0), {"group_size": 1})
    u = torch.randn(200_000, 2, generator=torch.Generator().manual_seed(0))
    means, _ = gen.decode_kw(u)
    assert torch.allclose(means, torch.full_like(means, 10.0))  # what BTGM tunes: the decoder mean, in kW
    curves, peaks = gen.decode_kw(u, generator=torch.Generator().manual_seed(1), noise=True)
    x = torch.cat([curves, peaks[:, None]], 1)
    sd = 2 * torch.tensor([-2.0, -1.0, -3.0]).mul(0.5).exp()
    assert torch.allclose(x.mean(0), torch.full((3,), 10.0), rtol=0.002)
    assert torch.allclose(x.std(0), sd, rtol=0.01)
    again, _ = gen.decode_kw(u, generator=torch.Generator().manual_seed(1), noise=True)
    other, _ = gen.decode_kw(u, generator=torch.Generator().manual_seed(2), noise=True)
    assert torch.equal(again, curves) and not torch.equal(other, curves)


def test_variance_per_feature_or_per_feature_and_latent():
    z = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    homo, hetero = small_vae(heteroscedastic=False), small_vae()
    for p in hetero.decoder[-1].parameters():
        torch.nn.init.normal_(p, std=0.5, generator=torch.Generator().manual_seed(1))
    mean, logvar = homo.decode(z)
    assert mean.shape == (4, 3) and torch.equal(logvar, homo.obs_logvar.expand(4, 3))
    mean, logvar = hetero.decode(z)
    assert mean.shape == (4, 3) and not torch.allclose(logvar[0], logvar[1])  # the variance follows z


def test_scaler_power_round_trip_and_clip():
    x = np.abs(np.random.default_rng(0).normal(2.0, 1.0, (50, 4))).astype(np.float32)
    sc = Scaler.fit(x, power=0.6)
    y = sc.transform(x)
    assert np.allclose(y.mean(0), 0, atol=1e-5) and np.allclose(y.std(0), 1, atol=1e-4)
    assert np.allclose(sc.inverse_torch(torch.as_tensor(y)).numpy(), x, rtol=1e-4)
    assert float(sc.inverse_torch(torch.full((1, 4), -50.0)).max()) == 0.0  # below zero load: 0 kW
    assert Scaler.from_dict(sc.to_dict()).power == 0.6


@pytest.mark.parametrize("smoothing", [0.0, 0.5])
def test_latent_prior_fits_the_aggregate_posterior(smoothing):
    """Posterior means μ_i ~ N(c, t²), posterior sd s: the aggregate posterior is N(c, (t² + s²)·I); smoothed
    to a std of at least h > s, it is N(c, (t² + h²)·I)."""
    g = torch.Generator().manual_seed(0)
    c, t, s_enc = torch.tensor([1.5, -0.5]), 0.6, 0.3
    mu = c + t * torch.randn(4000, 2, generator=g)
    model = SimpleNamespace(
        encode=lambda x: (mu, torch.full_like(mu, 2 * math.log(s_enc))), prior=LatentFlow(2, transforms=2, hidden=32, passes=2)
    )
    fit_prior(model, torch.zeros(4000, 3), steps=600, seed=0, smoothing=smoothing)
    s = max(s_enc, smoothing)
    with torch.no_grad():
        z, log_q, _ = model.prior.sample(50_000, generator=torch.Generator().manual_seed(1))
    sd = math.sqrt(t**2 + s**2)
    assert torch.allclose(z.mean(0), c, atol=0.05) and torch.allclose(z.std(0), torch.full((2,), sd), rtol=0.08)
    exact = torch.distributions.Normal(c, sd).log_prob(z).sum(-1)
    assert float((log_q - exact).mean()) == pytest.approx(0.0, abs=0.03)  # KL(flow ‖ exact) ≈ 0


@pytest.mark.parametrize(
    "case, smoothings, tried, expected",
    [
        ("clusters", (0.5, 0.0), ["0", "0.5"], 0.5),
        ("broad", (0.0, 1.0, 2.0), ["0", "1"], 0.0),
        ("tie", (0.0, 0.05), ["0", "0.05"], 0.05),
    ],
)
def test_prior_smoothing_is_chosen_by_the_validation_weeks_likelihood(case, smoothings, tried, expected):
    """Weeks drawn from N(0, 0.8²·I), the encoder the identity with posterior std s. "clusters": 20 training weeks, each
    seen 200 times with s = 0.01 — fitted as they are, the flow learns the 20 points and new weeks are unlikely, so the
    smoothed fit wins; "broad": 4,000 weeks with s = 0.3 — widening them to 1 makes the prior too wide, so h = 0 wins,
    and h = 2 is not tried; "tie": the same weeks, and h = 0.05 < s changes nothing, so the two fits are the same and
    the one-standard-error rule keeps the wider."""
    g = torch.Generator().manual_seed(0)
    n_weeks, repeats, s = (20, 200, 0.01) if case == "clusters" else (4000, 1, 0.3)
    x_train = (0.8 * torch.randn(n_weeks, 2, generator=g)).repeat(repeats, 1)
    x_val = 0.8 * torch.randn(500, 2, generator=g)
    torch.manual_seed(0)
    model = SimpleNamespace(
        encode=lambda x: (x, torch.full_like(x, 2 * math.log(s))), prior=LatentFlow(2, transforms=2, hidden=32, passes=2)
    )
    chosen = select_prior(model, x_train, x_val, steps=600, smoothings=smoothings, seed=0)
    assert chosen["prior_smoothing"] == expected and list(chosen["prior_val_nll"]) == tried
    kept = chosen["prior_val_nll"][f"{expected:g}"]
    assert float(prior_nll(model, x_val, seed=0).mean()) == pytest.approx(kept, abs=0.05)  # the kept fit is the model's


@pytest.mark.parametrize("power, cap", [(1.0, 0.0), (0.7, 0.0), (1.0, 0.8)])
def test_statistics_term_is_the_gaussian_likelihood_of_every_statistic(power, cap):
    """With weight w, the loss adds w·Σ_k(−log N(s_k(x); s_k(mean), σ_k²)) per curve, each statistic over its
    training std, curves read back through the scaler: checked against numpy, statistic by statistic
    (weekly peak, MAE flatness and the diversity factor written out by hand), on the same draws. With a cap
    c on σ_k, a σ_k above it counts as c and its log-variance gets no gradient; the others are untouched."""
    rng = np.random.default_rng(0)
    x_kw = np.abs(rng.normal(3.0, 1.5, (64, 15))).astype(np.float32)  # 14 slots (2 per day) + the sum of member peaks
    x_kw[:, -1] += 6.0
    sc = Scaler.fit(x_kw, power=power)
    names = ("weekly-peak", "mae-flatness", "diversity-factor")
    small = dict(n_features=15, latent_dim=2, hidden=8, blocks=1)
    vae = VAE(VAEConfig(**small, power=power, stat_weight=4.0, statistics=names, stat_sd_max=cap))
    if cap:  # the learned log-variances start below the cap, where they have a gradient
        assert (vae.stat_logvar < 2 * math.log(cap)).all()
    stds, logvars = np.array([2.5, 40.0, 0.7]), np.array([-0.7, 0.3, -1.2])
    with torch.no_grad():
        vae.feat_mean.copy_(torch.as_tensor(sc.mean)), vae.feat_std.copy_(torch.as_tensor(sc.std))
        vae.stat_std.copy_(torch.as_tensor(stds)), vae.stat_logvar.copy_(torch.as_tensor(logvars))
        for p in vae.decoder[-1].parameters():
            torch.nn.init.normal_(p, std=0.5, generator=torch.Generator().manual_seed(1))
    x = torch.as_tensor(sc.transform(x_kw))
    with torch.no_grad():
        _, nll_with, _ = vae.loss(x, generator=torch.Generator().manual_seed(3))
        _, nll_without, _ = vae.loss(x, generator=torch.Generator().manual_seed(3), stat_term=False)
        mu, logvar = vae.encode(x)
        eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(3))
        mean_kw = sc.inverse_torch(vae.decode(mu + eps * (0.5 * logvar).exp())[0]).numpy().astype(np.float64)

    def by_hand(f):  # (N, 15) kW -> (N, 3): peak, Σ|x - mean|·Δt with Δt = 168/14 h, sum of member peaks / peak
        c = f[:, :-1]
        return np.stack([c.max(1), np.abs(c - c.mean(1, keepdims=True)).sum(1) * 12.0, f[:, -1] / c.max(1)], 1) / stds

    lv = np.minimum(logvars, 2 * math.log(cap)) if cap else logvars  # with c = 0.8 the second one is capped
    terms = 0.5 * ((by_hand(x_kw.astype(np.float64)) - by_hand(mean_kw)) ** 2 / np.exp(lv) + lv + math.log(2 * math.pi))
    assert float(nll_with - nll_without) == pytest.approx(4.0 * terms.sum(1).mean(), rel=1e-4)
    vae.loss(x, generator=torch.Generator().manual_seed(3))[1].mean().backward()
    assert (vae.stat_logvar.grad != 0).tolist() == [True, not cap, True]


def test_the_statistics_are_every_registered_criterion_and_the_diversity_factor(monkeypatch):
    """A newly registered criterion joins the fitted (and reported) statistics with no code of its own."""
    import criteria
    from energy_btgm.model import statistics
    from energy_btgm.model.config import TrainConfig

    assert statistics.names()[-1] == "diversity-factor" and "weekly-peak" in statistics.names()
    assert "mae-flatness-min" not in statistics.names()  # a minimised form is the same statistic
    new = criteria.Criterion("evening-energy", lambda x: x[..., 36:44].sum(-1), "kWh", +1, "evening energy")
    monkeypatch.setitem(criteria.REGISTRY, new.name, new)
    assert "evening-energy" in TrainConfig().statistic_names()
    x = torch.rand(3, 336)
    got = statistics.compute(x, torch.full((3,), 9.0), ("evening-energy", "diversity-factor"))
    assert torch.allclose(got, torch.stack([x[:, 36:44].sum(-1), 9.0 / x.amax(-1)], -1))
    with pytest.raises(ParameterError, match="--statistics 'weekly-peek'.*not among"):
        TrainConfig(statistics="weekly-peek").validate()
