"""Residual VAE of group weekly curves (paper section 4.3: encoder and decoder of 10 residual blocks).

The model sees one vector per group-week: the weekly curve (T points, kW) and the group's sum of
member weekly peaks (kW), so that every generated curve carries its diversity factor. Inputs are
standardised per feature with a scaler fitted on the training split. The observation model is
Gaussian with a learned variance per feature; the prior is N(0, I) in ``latent_dim`` dimensions.
Generated curves are decoder means (the quantity BTGM tunes: ``f̂(z) = f(dec(z))``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

LOG2PI = math.log(2 * math.pi)


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """Architecture. ``n_features`` = T + 1 (curve points and the sum of member peaks)."""

    n_features: int = 337
    latent_dim: int = 16
    hidden: int = 256
    blocks: int = 10  # residual blocks in the encoder and in the decoder each


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
    return nn.Sequential(nn.Linear(n_in, width), *[ResBlock(width) for _ in range(blocks)],
                         nn.LayerNorm(width), nn.Linear(width, n_out))


class VAE(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = _tower(cfg.n_features, cfg.hidden, 2 * cfg.latent_dim, cfg.blocks)
        self.decoder = _tower(cfg.latent_dim, cfg.hidden, cfg.n_features, cfg.blocks)
        self.obs_logvar = nn.Parameter(torch.full((cfg.n_features,), -2.0))  # learned observation variance

    def encode(self, x):  # x: (B, F) scaled -> mu, logvar: (B, Z)
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return mu, logvar.clamp(-12.0, 6.0)

    def decode(self, z):  # z: (B, Z) -> (B, F) scaled decoder mean
        return self.decoder(z)

    def loss(self, x, kl_weight: float = 1.0, generator: torch.Generator | None = None):
        """Negative ELBO per curve (mean over the batch) and its parts, in nats. x: (B, F) scaled."""
        mu, logvar = self.encode(x)
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype)
        z = mu + eps * (0.5 * logvar).exp()
        xhat = self.decode(z)
        nll = 0.5 * (((x - xhat) ** 2) * (-self.obs_logvar).exp() + self.obs_logvar + LOG2PI).sum(-1)  # (B,)
        kl = 0.5 * (mu ** 2 + logvar.exp() - 1.0 - logvar).sum(-1)  # (B,)
        return (nll + kl_weight * kl).mean(), nll.mean(), kl.mean()


@dataclasses.dataclass
class Scaler:
    """Per-feature standardisation fitted on the training split: x_scaled = (x - mean) / std."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> "Scaler":
        return cls(x.mean(0).astype(np.float32), np.maximum(x.std(0), 1e-3).astype(np.float32))

    def transform(self, x):
        return (x - self.mean) / self.std

    def inverse_torch(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.as_tensor(self.std, dtype=x.dtype) + torch.as_tensor(self.mean, dtype=x.dtype)

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Scaler":
        return cls(np.asarray(d["mean"], np.float32), np.asarray(d["std"], np.float32))


class Generator:
    """A trained model ready to generate: ``decode_kw(z)`` maps latents (B, Z) to curves (B, T) in kW
    and sums of member peaks (B,) in kW, differentiably; ``sample(n)`` draws from the prior."""

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

    def decode_kw(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.scaler.inverse_torch(self.vae.decode(z))  # (B, T + 1)
        return x[:, :-1], x[:, -1]

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, batch: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(curves (n, T) kW, sum of member peaks (n,) kW, latents (n, Z)) from the prior."""
        g = torch.Generator().manual_seed(seed)
        zs, cs, ps = [], [], []
        for i in range(0, n, batch):
            z = torch.randn(min(batch, n - i), self.latent_dim, generator=g)
            c, p = self.decode_kw(z)
            zs.append(z.numpy()), cs.append(c.numpy()), ps.append(p.numpy())
        return np.concatenate(cs), np.concatenate(ps), np.concatenate(zs)


MODEL_FILES = ("weights.pt", "model.json")


def save_model(directory: Path, vae: VAE, scaler: Scaler, meta: dict) -> None:
    """Write ``weights.pt`` and ``model.json`` (config, scaler, provenance) into ``directory``."""
    torch.save(vae.state_dict(), directory / "weights.pt")
    doc = {"vae_config": dataclasses.asdict(vae.cfg), "scaler": scaler.to_dict(), **meta}
    (directory / "model.json").write_text(json.dumps(doc, indent=1))


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
        cfg = VAEConfig(**doc["vae_config"])
    except TypeError as e:
        raise ValueError(f"{directory / 'model.json'}: vae_config does not match this version ({e}); retrain the model") from None
    vae = VAE(cfg)
    try:
        vae.load_state_dict(torch.load(directory / "weights.pt", weights_only=True))
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise ValueError(f"{directory / 'weights.pt'} does not match the config in model.json ({first}); "
                         "retrain or restore the matching files") from None
    scaler = Scaler.from_dict(doc["scaler"])
    if len(scaler.mean) != cfg.n_features:
        raise ValueError(f"{directory / 'model.json'}: scaler has {len(scaler.mean)} features, model {cfg.n_features}")
    return Generator(vae, scaler, doc, directory)
