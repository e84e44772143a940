"""``LatentFlow``: an invertible map of the latent space with an exact log-determinant (zuko's MAF).

Two users: the VAE's second-stage prior (``z = T(u)``, fitted to the aggregate posterior; DESIGN.md)
and BTGM, whose tuned distribution is ``z = g(ẑ)``, ``ẑ ~ N(0, I)`` (paper section 3). Both need
exact densities: ``log q(z) = log N(ẑ) − log|det J_g(ẑ)|``.

The flow reaches into zuko's internals in two places (the conditioners' last layer, zeroed so that
the flow starts as the identity; ``transform().call_and_ladj`` and ``.inv``); the zuko version is
bounded in ``pyproject.toml`` and ``tests/test_flow.py`` fails loudly if those internals move.
"""

from __future__ import annotations

import math

import torch
from torch import nn

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def log_normal(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) per row. z: (..., Z) -> (...)."""
    return -0.5 * (z**2).sum(-1) - z.shape[-1] * HALF_LOG_2PI


class LatentFlow(nn.Module):
    """z = g(ẑ), an invertible map of R^Z with exact log-determinant, the identity at initialisation."""

    def __init__(self, dim: int, transforms: int = 6, hidden: int = 128, passes: int | None = None):
        super().__init__()
        import zuko

        self.dim = dim
        # passes: sequential passes of the inverse (log_prob of given latents); None = fully
        # autoregressive (dim passes), 2 = a coupling flow whose inverse costs two passes
        self.maf = zuko.flows.MAF(dim, transforms=transforms, hidden_features=[hidden, hidden], passes=passes)
        for t in self.maf.transform.transforms:  # zero the last layer of each conditioner: exact identity
            last = t.hyper[-1]
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, zhat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z (B, Z), log|det J_g(ẑ)| (B,)) for ẑ (B, Z)."""
        return self.maf.transform().call_and_ladj(zhat)

    def sample(self, n: int, generator: torch.Generator | None = None, spread: float = 1.0):
        """(z (n, Z), log q(z) (n,), log p(z) (n,)). With ``spread`` s ≠ 1, ẑ ~ N(0, s²·I): a wider
        version of q, and log q is that version's exact density."""
        zhat = torch.randn(n, self.dim, generator=generator)  # (n, Z)
        log_base = log_normal(zhat) - self.dim * math.log(spread)  # (n,)
        z, ladj = self(zhat * spread)  # (n, Z), (n,)
        return z, log_base - ladj, log_normal(z)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z) (B,) of given latents (B, Z), through the inverse map (Z sequential passes per layer)."""
        zhat, ladj_inv = self.maf.transform().inv.call_and_ladj(z)  # (B, Z), (B,)
        return log_normal(zhat) + ladj_inv
