"""Shared building blocks below every layer: the latent flow, importance-weight statistics, figures.

``core`` owns what more than one layer needs and no layer should own: ``flow`` (``LatentFlow``, the
normalizing flow on latent space that the VAE's second-stage prior and BTGM's tuning both use, and
the standard normal density), ``weights`` (effective sample size and the moments of an exponentially
tilted sample, Eq. 29–31) and ``figures`` (matplotlib ``Figure`` objects to PNG bytes, without
touching the user's backend). It may import numpy, scipy, torch, zuko and matplotlib, never another
``energy_btgm`` module.
"""

BATCH = 8192  # latents per pass when sampling or scoring in chunks (memory stays bounded; large enough to be fast)
