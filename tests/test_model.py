"""The observation model, the feature scaling and the second-stage latent prior against closed forms."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from energy_btgm.core.flow import LatentFlow
from energy_btgm.model.train import fit_prior
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


def test_latent_prior_fits_the_aggregate_posterior():
    """Posterior means μ_i ~ N(c, t²), posterior sd s: the aggregate posterior is N(c, (t² + s²)·I)."""
    g = torch.Generator().manual_seed(0)
    c, t, s = torch.tensor([1.5, -0.5]), 0.6, 0.3
    mu = c + t * torch.randn(4000, 2, generator=g)
    model = SimpleNamespace(
        encode=lambda x: (mu, torch.full_like(mu, 2 * math.log(s))), prior=LatentFlow(2, transforms=2, hidden=32, passes=2)
    )
    fit_prior(model, torch.zeros(4000, 3), steps=600, seed=0)
    with torch.no_grad():
        z, log_q, _ = model.prior.sample(50_000, generator=torch.Generator().manual_seed(1))
    sd = math.sqrt(t**2 + s**2)
    assert torch.allclose(z.mean(0), c, atol=0.05) and torch.allclose(z.std(0), torch.full((2,), sd), rtol=0.08)
    exact = torch.distributions.Normal(c, sd).log_prob(z).sum(-1)
    assert float((log_q - exact).mean()) == pytest.approx(0.0, abs=0.03)  # KL(flow ‖ exact) ≈ 0


@pytest.mark.parametrize("power", [1.0, 0.7])
def test_peak_term_is_the_gaussian_likelihood_of_the_weekly_peak(power):
    """With peak weight w, the loss adds w·(−log N(peak(x); peak(mean), σ²)) per curve, peaks in kW over
    their training std, read back through the scaler: checked against numpy on the same draws."""
    rng = np.random.default_rng(0)
    x_kw = np.abs(rng.normal(3.0, 1.5, (64, 7))).astype(np.float32)  # 6 slots + the sum of member peaks
    sc = Scaler.fit(x_kw, power=power)
    vae = VAE(VAEConfig(n_features=7, latent_dim=2, hidden=8, blocks=1, power=power, peak_weight=4.0))
    with torch.no_grad():
        vae.feat_mean.copy_(torch.as_tensor(sc.mean)), vae.feat_std.copy_(torch.as_tensor(sc.std))
        vae.peak_std.fill_(2.5), vae.peak_logvar.fill_(-0.7)
        for p in vae.decoder[-1].parameters():
            torch.nn.init.normal_(p, std=0.5, generator=torch.Generator().manual_seed(1))
    x = torch.as_tensor(sc.transform(x_kw))
    with torch.no_grad():
        _, nll_with, _ = vae.loss(x, generator=torch.Generator().manual_seed(3))
        _, nll_without, _ = vae.loss(x, generator=torch.Generator().manual_seed(3), peak_term=False)
        mu, logvar = vae.encode(x)
        eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(3))
        mean_kw = sc.inverse_torch(vae.decode(mu + eps * (0.5 * logvar).exp())[0]).numpy()
    a, b = x_kw[:, :-1].max(1) / 2.5, mean_kw[:, :-1].max(1) / 2.5
    var = math.exp(-0.7)
    want = 4.0 * np.mean(0.5 * ((a - b) ** 2 / var + math.log(var) + math.log(2 * math.pi)))
    assert float(nll_with - nll_without) == pytest.approx(want, rel=1e-4)
