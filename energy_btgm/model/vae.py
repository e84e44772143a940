"""Residual VAE of group weekly curves (paper section 4.3: encoder and decoder of 10 residual blocks).

The model sees one vector per group-week: the weekly curve (T points, kW) and the group's sum of
member weekly peaks (kW), so that every generated curve carries its diversity factor. Features are
raised to ``power`` (default 1: kW as they are) and standardised with a scaler fitted on the
training split. The observation model is Gaussian, with a learned variance per feature (or, with
``heteroscedastic``, per feature and latent).

Generated curves are decoder means (the quantity BTGM tunes: ``f̂(z) = f(dec(z))``, DESIGN.md). A
Gaussian decoder's mean averages away what the latent does not carry: the slot-level spikes that make
a small group's weekly peak, the day-to-day swings behind the Wednesday gap, the volatility that MAE
flatness measures. With ``stat_weight`` w > 0 the model also observes, w times, each of the
``statistics`` of a week (every registered criterion and the diversity factor, ``model/statistics.py``)
as that statistic of the decoder mean, with its own learned variance: the objective is the ELBO of a
model that sees the curve once and its statistics w more times, so the latent carries what the
statistics need, and a newly registered criterion is fitted with no code of its own. The card shows
the fit of the means and, beside it, of draws x ~ p(x|z).

With ``prior_transforms`` > 0 the latent gets a second-stage prior (a two-stage VAE): a coupling
flow ``z = T(u)``, fitted after training to the training curves' aggregate posterior, so that
generated weeks have the energy of real ones. The generator's latent is then ``u ~ N(0, I)``, and
BTGM, rejection sampling and importance weights all live on it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from energy_btgm.core import checkpoint
from energy_btgm.model import statistics
from energy_btgm.store import to_json

LOG2PI = math.log(2 * math.pi)


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """Architecture. ``n_features`` = T + 1 (curve points and the sum of member peaks)."""

    n_features: int = 337
    latent_dim: int = 16
    hidden: int = 256
    blocks: int = 10  # residual blocks in the encoder and in the decoder each
    power: float = 1.0  # features are modelled as x ** power (kW ** power)
    prior_transforms: int = 0  # coupling layers of a second-stage prior flow z = T(u); 0: z ~ N(0, I)
    joint_prior: bool = False  # the prior flow trained with the VAE (KL to it) instead of fitted afterwards
    heteroscedastic: bool = False  # observation variance per feature and latent (True) or per feature only
    stat_weight: float = 0.0  # weight of the statistics term (0: off)
    statistics: tuple[str, ...] = ()  # statistics observed as those of the decoder mean (model/statistics.py)
    stat_sd_max: float = 0.0  # cap on each statistic's residual std (in its training stds); 0: none (models before it)


def to_kw(y: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, power: float) -> torch.Tensor:
    """Features on the model's scale back to kW: max(y·std + mean, 0) ** (1 / power)."""
    y = (y * std + mean).clamp(min=0.0)  # (B, F) * (F,) + (F,) -> (B, F)
    return y if power == 1.0 else y ** (1.0 / power)  # no power pass on the default (hot) path


class ResBlock(nn.Module):
    """x + W2 SiLU(W1 LayerNorm(x)); the second layer starts at zero so each block starts as the identity."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x):
        return x + self.fc2(nn.functional.silu(self.fc1(self.norm(x))))


def _tower(n_in: int, width: int, n_out: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(n_in, width), *[ResBlock(width) for _ in range(blocks)], nn.LayerNorm(width), nn.Linear(width, n_out)
    )


class VAE(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = _tower(cfg.n_features, cfg.hidden, 2 * cfg.latent_dim, cfg.blocks)
        self.decoder = _tower(cfg.latent_dim, cfg.hidden, (2 if cfg.heteroscedastic else 1) * cfg.n_features, cfg.blocks)
        self.obs_logvar = nn.Parameter(torch.full((cfg.n_features,), -2.0))  # per-feature observation log-variance
        if cfg.stat_weight:
            # the scaler (to read curves in kW from the model's scale) and the statistics' stds; set by train()
            k = len(cfg.statistics)
            self.register_buffer("feat_mean", torch.zeros(cfg.n_features))
            self.register_buffer("feat_std", torch.ones(cfg.n_features))
            self.register_buffer("stat_std", torch.ones(k))
            # per-statistic observation log-variance; with a cap it starts below it: σ = 0.17, or 0.7 of the cap if lower
            self.stat_logvar_max = 2 * math.log(cfg.stat_sd_max) if cfg.stat_sd_max else None
            init = -2.0 if self.stat_logvar_max is None else min(-3.5, self.stat_logvar_max - 0.7)
            self.stat_logvar = nn.Parameter(torch.full((k,), init))
        self.prior = None
        if cfg.prior_transforms:
            from energy_btgm.core.flow import LatentFlow

            self.prior = LatentFlow(cfg.latent_dim, transforms=cfg.prior_transforms, hidden=128, passes=2)

    def encode(self, x):  # x: (B, F) scaled -> mu, logvar: (B, Z)
        mu, logvar = self.encoder(x).chunk(2, dim=-1)  # (B, 2Z) -> 2 x (B, Z)
        return mu, logvar.clamp(-12.0, 6.0)

    def decode(self, z):  # z: (B, Z) -> mean and log-variance (B, F) of p(x|z), on the model's scale
        if not self.cfg.heteroscedastic:
            mean = self.decoder(z)  # (B, F)
            return mean, self.obs_logvar.expand_as(mean)  # (F,) -> (B, F)
        mean, dlogvar = self.decoder(z).chunk(2, dim=-1)  # (B, 2F) -> 2 x (B, F)
        return mean, (self.obs_logvar + dlogvar).clamp(-8.0, 4.0)  # (F,) + (B, F) -> (B, F)

    @staticmethod
    def obs_log_prob(x, mean, logvar):
        """log p(x|z) per curve (B,)."""
        return -0.5 * ((x - mean) ** 2 * (-logvar).exp() + logvar + LOG2PI).sum(-1)  # (B, F) -> (B,)

    @staticmethod
    def draw(mean, logvar, generator: torch.Generator | None = None) -> torch.Tensor:
        """One draw of x ~ p(x|z) per row (model's scale)."""
        return mean + (0.5 * logvar).exp() * torch.randn(mean.shape, generator=generator, dtype=mean.dtype)  # (B, F)

    def stats(self, y):
        """(B, K) the ``statistics`` of features (B, F) on the model's scale, each over its training std."""
        kw = to_kw(y, self.feat_mean, self.feat_std, self.cfg.power)  # (B, F): curve (B, T) | sum of member peaks
        return statistics.compute(kw[:, :-1], kw[:, -1], self.cfg.statistics) / self.stat_std  # (B, K) / (K,)

    def loss(self, x, kl_weight: float = 1.0, generator: torch.Generator | None = None, stat_term: bool = True, x_stats=None):
        """Negative ELBO per curve (mean over the batch) and its parts, in nats. x: (B, F) scaled.

        With ``stat_weight`` w > 0 (and ``stat_term``), the reconstruction term also holds w times the
        Gaussian negative log-likelihood of each statistic of the curve given that statistic of the
        decoder mean: the objective is then the ELBO of a model that observes them w more times.
        ``x_stats`` (B, K): ``stats(x)`` computed beforehand (training computes them once per data set)."""
        mu, logvar = self.encode(x)
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype)  # (B, Z)
        z = mu + eps * (0.5 * logvar).exp()  # (B, Z)
        mean, obs_logvar = self.decode(z)  # (B, F), (B, F)
        nll = -self.obs_log_prob(x, mean, obs_logvar)  # (B,)
        if self.cfg.stat_weight and stat_term:
            lv = self.stat_logvar  # (K,)
            if self.stat_logvar_max is not None:  # no statistic may be fitted loosely by calling it noisy
                lv = lv.clamp(max=self.stat_logvar_max)
            sq = ((self.stats(x) if x_stats is None else x_stats) - self.stats(mean)) ** 2  # (B, K)
            nll = nll + self.cfg.stat_weight * 0.5 * (sq * (-lv).exp() + lv + LOG2PI).sum(-1)  # (B,)
        if self.prior is not None and self.cfg.joint_prior:
            # KL(q(z|x) ‖ p_T) by one draw: log q(z|x) - log p_T(z), the prior's density through its inverse
            log_q = -0.5 * (eps**2 + logvar + LOG2PI).sum(-1)  # (B,)
            kl = log_q - self.prior.log_prob(z)  # (B,)
        else:
            kl = 0.5 * (mu**2 + logvar.exp() - 1.0 - logvar).sum(-1)  # (B,)
        return (nll + kl_weight * kl).mean(), nll.mean(), kl.mean()


@dataclasses.dataclass
class Scaler:
    """Features in kW to the model's scale and back: y = (max(x, 0) ** power - mean) / std, with mean and
    std fitted on the training split."""

    mean: np.ndarray
    std: np.ndarray
    power: float = 1.0

    @classmethod
    def fit(cls, x: np.ndarray, power: float = 1.0) -> Scaler:
        y = np.maximum(x, 0) ** power
        return cls(y.mean(0).astype(np.float32), np.maximum(y.std(0), 1e-3).astype(np.float32), power)

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((np.maximum(x, 0) ** self.power - self.mean) / self.std).astype(np.float32)

    def inverse_torch(self, y: torch.Tensor) -> torch.Tensor:
        """kW from the model's scale; values that map below 0 kW are clipped to 0 kW."""
        return to_kw(y, torch.as_tensor(self.mean, dtype=y.dtype), torch.as_tensor(self.std, dtype=y.dtype), self.power)

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "power": self.power}

    @classmethod
    def from_dict(cls, d: dict) -> Scaler:
        return cls(np.asarray(d["mean"], np.float32), np.asarray(d["std"], np.float32), float(d.get("power", 1.0)))


class Generator:
    """A trained model ready to generate: ``decode_kw(u)`` maps latents u (B, Z) to curves (B, T) in kW
    and sums of member peaks (B,) in kW, the decoder mean at z = T(u), differentiably in u (what BTGM
    tunes); ``sample(n)`` draws u from N(0, I); ``sample(n, noise=True)`` draws x ~ p(x|z) instead."""

    def __init__(self, vae: VAE, scaler: Scaler, meta: dict, path: Path | None = None):
        self.vae = vae.eval()
        for p in self.vae.parameters():
            p.requires_grad_(False)
        self.scaler = scaler
        self.meta = meta
        self.path = path

    @property
    def latent_dim(self) -> int:
        return self.vae.cfg.latent_dim

    def _kw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.scaler.inverse_torch(x)  # (B, F) kW
        return x[:, :-1], x[:, -1]  # curves (B, T), sums of member peaks (B,)

    def decode_kw(self, u: torch.Tensor, generator: torch.Generator | None = None, noise: bool = False):
        """Curves (B, T) and sums of member peaks (B,) in kW for latents u (B, Z): the decoder mean at
        z = T(u), or with ``noise`` a draw of x ~ p(x|z) (noise from ``generator``)."""
        mean, logvar = self.vae.decode(u if self.vae.prior is None else self.vae.prior(u)[0])  # (B, Z) -> (B, F)
        return self._kw(self.vae.draw(mean, logvar, generator) if noise else mean)

    def reconstruct_kw(self, x_kw: np.ndarray) -> np.ndarray:
        """Decoder means (kW) at the posterior means of real curves + peaks (N, F): the card's reconstructions."""
        with torch.no_grad():
            mu, _ = self.vae.encode(torch.as_tensor(self.scaler.transform(x_kw)))
            return self._kw(self.vae.decode(mu)[0])[0].numpy()

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, batch: int = 4096, noise: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(curves (n, T) kW, sum of member peaks (n,) kW, latents u (n, Z)) from the prior."""
        g = torch.Generator().manual_seed(seed)
        g_noise = torch.Generator().manual_seed(seed + 1)  # its own stream: with or without noise, the same latents
        zs, cs, ps = [], [], []
        for i in range(0, n, batch):
            z = torch.randn(min(batch, n - i), self.latent_dim, generator=g)  # (b, Z)
            c, p = self.decode_kw(z, generator=g_noise, noise=noise)
            zs.append(z.numpy()), cs.append(c.numpy()), ps.append(p.numpy())
        return np.concatenate(cs), np.concatenate(ps), np.concatenate(zs)


MODEL_FILES = ("weights.pt", "model.json")


def save_model(directory: Path, vae: VAE, scaler: Scaler, meta: dict) -> None:
    """Write ``weights.pt`` and ``model.json`` (config, scaler, provenance) into ``directory``."""
    checkpoint.save(vae.state_dict(), directory / "weights.pt")
    doc = {"vae_config": dataclasses.asdict(vae.cfg), "scaler": scaler.to_dict(), **meta}
    (directory / "model.json").write_text(to_json(doc, str(directory / "model.json"), indent=1))


def load_model(directory: Path) -> Generator:
    """Load a model directory; a missing file or a config that does not match the weights is a clear error."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"model {directory} not found; train one with `energy-btgm train`")
    for f in MODEL_FILES:
        if not (directory / f).exists():
            raise FileNotFoundError(f"model {directory} is incomplete: {f} is missing; retrain with `energy-btgm train`")
    doc = json.loads((directory / "model.json").read_text())
    try:
        cfg = VAEConfig(**{**doc["vae_config"], "statistics": tuple(doc["vae_config"].get("statistics", ()))})
    except TypeError as e:
        raise ValueError(f"{directory / 'model.json'}: vae_config does not match this version ({e}); retrain the model") from None
    vae = VAE(cfg)
    try:
        vae.load_state_dict(checkpoint.load(directory / "weights.pt", fix="retrain with `energy-btgm train`"))
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise ValueError(
            f"{directory / 'weights.pt'} does not match the config in model.json ({first}); retrain or restore the matching files"
        ) from None
    scaler = Scaler.from_dict(doc["scaler"])
    if scaler.power != cfg.power:
        raise ValueError(f"{directory / 'model.json'}: scaler power {scaler.power} differs from the model's {cfg.power}")
    if len(scaler.mean) != cfg.n_features:
        raise ValueError(f"{directory / 'model.json'}: scaler has {len(scaler.mean)} features, model {cfg.n_features}")
    return Generator(vae, scaler, doc, directory)
