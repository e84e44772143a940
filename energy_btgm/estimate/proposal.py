"""BTGM flows as importance proposals for the tail of a criterion: tuning, defensive mixture, refinement.

For a level u the proposal is a flow tuned to KL = −log(1 − u), mixed with defensive Gaussians
N(μ_k, I), one per hour of the week at which the tail peaks, and refined by the cross-entropy method
toward p(z | tail). A reverse-KL flow keeps one mode of the tail: where the tail has several (the
weekly peak's far tail has one per day), the mode-finding mixture of ``estimate.modes`` is the
better proposal, and the comparison's default; this one is kept as ``compare --proposal flows``.
``prepare_proposal`` does all of it; ``sample_proposal`` draws from the result with exact weights
``w = p/q̂``. Every step reports the decoder evaluations it costs, which the comparison charges to
BTGM's budget.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings

import numpy as np
import torch

from energy_btgm.core import BATCH
from energy_btgm.core.flow import log_normal
from energy_btgm.estimate.estimators import weighted_estimates
from energy_btgm.model.vae import Generator
from energy_btgm.tuning.engine import TuneConfig, tune

# an importance proposal needs no exact KL: a short search (few steps, loose tolerance) and a small
# flow leave most of the budget to sampling; the refinement below does the fine fitting. Proposal
# flows are coupling flows (passes=2): the defensive mixture below needs their density at its draws,
# and a coupling flow's inverse takes two passes instead of one per latent dimension (4x faster here)
PROPOSAL_CONFIG = TuneConfig(transforms=3, hidden=64, steps=120, max_iter=2, tol=0.1, n_norm=BATCH, n_eval=BATCH, passes=2)
# Defensive importance sampling (Hesterberg 1995): each proposal flow draws this share of its samples
# from Σ_k π_k N(μ_k, I), one component per hour of the week at which its tail peaks (μ_k
# the mean of that part of the tail), and every sample is weighted by the mixture's exact density.
# Reverse-KL flows are narrower than p(z | tail) in places, so that p/q̂ has a heavy tail (a Pareto
# index k̂ of 0.5 to 0.8, an unstable variance, on the demo model's minor-day flows); against N(μ, I)
# the ratio p/q is exp(−μ·z + |μ|²/2), bounded where the tail lies beyond μ, and so is the mixture's.
# One component per hour because within a day the tail has one mode per hour of the peak (on the demo
# model, Friday's peaks at 21:30 hold a quarter of Friday's tail, and a flow tuned on Friday draws
# them five times too rarely): the largest weights came from there
DEFENSIVE = 0.25


@dataclasses.dataclass(frozen=True)
class RefineConfig:
    """Cross-entropy refinement of a tuned flow toward p(z | tail): weighted maximum likelihood on
    the flow's own draws (``steps`` of ``batch``), drawn with the base widened by ``spread`` to explore."""

    steps: int = 15
    batch: int = 1024
    lr: float = 3e-3
    spread: float = 1.2


REFINE_CONFIG = RefineConfig(steps=30, batch=2048)  # cheap, and at 0.99 it halves the weights' variance


def scorer(gen: Generator, crit):
    """The hard criterion of latents given as a numpy array, (n, Z) -> (n,): what ``estimate.modes`` searches."""
    return lambda z: score(gen, crit, torch.as_tensor(z, dtype=torch.float32))["f"]


@torch.no_grad()
def score(gen: Generator, crit, z: torch.Tensor) -> dict[str, np.ndarray]:
    """Hard criterion, peak [kW], diversity factor and the peak's hour of the week (0 = Monday 0:00) of
    decoded latents z (B, Z)."""
    x, peaks = gen.decode_kw(z)  # (B, T) kW, (B,) kW
    peak, at = x.max(1)  # (B,), (B,) slot of the peak
    return {
        "f": crit(x).double().numpy(),
        "peak": peak.double().numpy(),
        "df": (peaks / peak.clamp_min(1e-6)).double().numpy(),
        "peak_hour": (at * 168 // x.shape[1]).numpy(),
    }


@dataclasses.dataclass
class Proposal:
    """BTGM flows as importance proposals (the samples each draws in the proportions ``share``)."""

    flows: list
    share: np.ndarray  # share of the samples each flow draws
    train_seconds: float
    train_evals: int
    centres: list | None = None  # per flow, (K, Z): its defensive components' centres, one per hour of the peak
    mix: list | None = None  # per flow, (K,): the defensive components' mixing weights (they sum to 1)
    defensive: float = DEFENSIVE  # share of each flow's draws from its defensive components N(centre_k, I)

    def draw(self, d: int, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """n draws of proposal d, (z, log q(z), log p(z)): the flow alone until ``centres`` are set,
        then the defensive mixture (1 − ε)·q̂_d + ε·Σ_k π_k N(centre_k, I), log q its exact density."""
        flow = self.flows[d]
        if self.centres is None:
            return flow.sample(n, generator=generator)
        c, log_mix = self.centres[d], self.mix[d].log()  # (K, Z), (K,)
        k = int(round(self.defensive * n))
        z, log_q_flow, _ = flow.sample(n - k, generator=generator)  # (n - k, Z), (n - k,)
        if k:
            z_def = c[torch.multinomial(self.mix[d], k, replacement=True, generator=generator)]  # (k, Z) centres
            z_def = z_def + torch.randn(k, flow.dim, generator=generator)  # (k, Z)
            z, log_q_flow = torch.cat([z, z_def]), torch.cat([log_q_flow, flow.log_prob(z_def)])  # (n, Z), (n,)
        # (n, 1, Z) - (1, K, Z) -> (n, K, Z); log N per component (n, K) + log π (K,) -> logsumexp over K: (n,)
        log_q_def = torch.logsumexp(log_mix + log_normal(z[:, None, :] - c[None]), 1)
        log_q = torch.logaddexp(math.log1p(-self.defensive) + log_q_flow, math.log(self.defensive) + log_q_def)
        return z, log_q, log_normal(z)


def _pilot_quantile(pilot: dict, u: float) -> float:
    """The level-u quantile estimated from a pilot's weighted draws."""
    return weighted_estimates(pilot["f"], pilot["w"], u, 0.0, pilot["group"])["quantile"]


def train_proposal(gen: Generator, crit, u: float, cfg: TuneConfig, seed: int) -> Proposal:
    """Tune the proposal flow to KL = −log(1 − u)."""
    t0 = time.perf_counter()
    with warnings.catch_warnings():  # a proposal needs no exact KL: the short search's warning is noise here
        warnings.simplefilter("ignore", RuntimeWarning)
        kl = -math.log(1 - u)
        res = tune(lambda z: crit.train(gen.decode_kw(z)[0]), gen.latent_dim, kl, dataclasses.replace(cfg, seed=seed))
    evals = len(res.path) * cfg.steps * cfg.batch + cfg.n_norm * 2 + len(res.path) * cfg.n_eval
    return Proposal([res.flow], np.ones(1), time.perf_counter() - t0, evals)


def sample_proposal(
    gen: Generator, crit, prop: Proposal, seconds: float, generator: torch.Generator, batch: int = BATCH
) -> dict[str, np.ndarray]:
    """Draw from the proposal flows in the proportions ``prop.share`` for ``seconds``, ``batch`` draws of
    one flow at a time (at least one batch each; full batches keep the flows' small layers efficient):
    f, peak, df, the weight w = p/q̂ and the drawing flow."""
    k = len(prop.flows)
    drawn = np.zeros(k)
    parts = {"f": [], "peak": [], "df": [], "w": [], "group": []}
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds or (drawn == 0).any():
        d = int(np.argmin(drawn / prop.share))  # the flow furthest behind its share (shares are > 0)
        with torch.no_grad():
            z, log_q, log_p = prop.draw(d, batch, generator)
        s = score(gen, crit, z)
        w = np.exp((log_p - log_q).double().numpy())
        for key in ("f", "peak", "df"):
            parts[key].append(s[key])
        parts["w"].append(w)
        parts["group"].append(np.full(batch, d))
        drawn[d] += batch
    return {key: np.concatenate(v) for key, v in parts.items()}


@torch.no_grad()
def _tail_draws(
    gen: Generator, crit, prop: Proposal, d: int, n: int, threshold: float, generator: torch.Generator, spread: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """n draws of proposal d (of flow d alone, its base widened by ``spread``, until the defensive
    components are set; of the mixture after); those in the tail (f ≥ threshold), their
    self-normalised weights p/q and the hour of the week of their peak (all empty when none land there)."""
    if prop.centres is None:
        z, log_q, log_p = prop.flows[d].sample(n, generator=generator, spread=spread)
    else:  # the defensive components explore
        z, log_q, log_p = prop.draw(d, n, generator)
    s = score(gen, crit, z)
    hit = s["f"] >= threshold
    at = torch.as_tensor(hit)  # (n,) bool
    return z[at], torch.softmax((log_p - log_q)[at], 0), s["peak_hour"][hit]  # (H, Z), (H,), (H,) for H hits


def refine(gen: Generator, crit, prop: Proposal, threshold: float, cfg: RefineConfig, generator: torch.Generator) -> int:
    """Move each flow toward p(z | f ≥ threshold), the zero-variance proposal, by weighted
    maximum likelihood on draws of the proposal (the cross-entropy method; weights p/q on the draws
    that land in the tail): of the flow with its base widened by ``cfg.spread``, or, once the defensive
    components are set, of the mixture, whose components bring draws from the parts of the tail the
    flow misses. Reverse-KL tuning finds the tail; this makes the proposal cover it: on the demo model
    it cuts the spread of the weights in the tail about threefold. Returns the decoder evaluations."""
    for d, flow in enumerate(prop.flows):
        opt = torch.optim.Adam(flow.parameters(), lr=cfg.lr)
        for _ in range(cfg.steps):
            z, weight, _ = _tail_draws(gen, crit, prop, d, cfg.batch, threshold, generator, spread=cfg.spread)
            if not len(z):
                continue
            loss = -(weight * flow.log_prob(z)).sum()  # the inverse pass only on the hits (the others weigh 0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return len(prop.flows) * cfg.steps * cfg.batch


@torch.no_grad()
def tail_centres(
    gen: Generator,
    crit,
    prop: Proposal,
    threshold: float,
    generator: torch.Generator,
    n: int = BATCH,
    min_hits: int = 5,
    spread: float = 1.5,
) -> int:
    """Set each flow's defensive components: one per hour of the week at which its draws in its
    tail (f ≥ threshold) peak (hours with at least ``min_hits`` of them), centred at their
    p/q̂-weighted mean, weighted half by their mass, half uniformly (the flow under-samples the rare
    hours, so their mass is underestimated); one component at the tail's mean where no hour has
    enough draws, at 0 where none land in the tail. Returns the decoder evaluations."""
    centres, mix = [], []
    for d, flow in enumerate(prop.flows):
        z, w, hour = _tail_draws(gen, crit, prop, d, n, threshold, generator, spread=spread)
        if not len(z):
            centres.append(torch.zeros(1, flow.dim))
            mix.append(torch.ones(1))
            continue
        hours, counts = np.unique(hour, return_counts=True)
        groups = [torch.as_tensor(hour == h) for h in hours[counts >= min_hits]] or [torch.ones(len(z), dtype=torch.bool)]
        mass = torch.stack([w[g].sum() for g in groups])  # (K,)
        # per group: (H_k, 1) * (H_k, Z) summed -> (Z,); stacked (K, Z) / (K, 1)
        centres.append(torch.stack([(w[g, None] * z[g]).sum(0) for g in groups]) / mass[:, None])
        mix.append(0.5 * mass / mass.sum() + 0.5 / len(mass))
    prop.centres, prop.mix = centres, mix
    return len(prop.flows) * n


def prepare_proposal(
    gen: Generator,
    crit,
    u: float,
    cfg: TuneConfig,
    seed: int,
    generator: torch.Generator,
    refine_cfg: RefineConfig | None = None,
    defensive: float = DEFENSIVE,
) -> tuple[Proposal, dict]:
    """Everything before the sampling proper, charged to BTGM's budget: tune the flow(s), a pilot for the
    tail threshold (its u-quantile), place the defensive components, refine the flow on draws of the
    mixture, then a pilot of the final proposal. ``refine_cfg`` defaults to ``REFINE_CONFIG``
    (``steps=0`` skips it); ``defensive=0`` leaves the flow without a defensive component. Returns the
    proposal (``train_seconds`` covers all of it) and that last pilot (valid samples)."""
    if not 0 <= defensive < 1:
        raise ValueError(f"the defensive share must lie in [0, 1), got {defensive}")
    t0 = time.perf_counter()
    prop = train_proposal(gen, crit, u, cfg, seed)
    refine_cfg = refine_cfg or REFINE_CONFIG
    pilot_batch = 4096  # per flow
    pilot = sample_proposal(gen, crit, prop, 0.0, generator, batch=pilot_batch)
    threshold = _pilot_quantile(pilot, u)
    prop.train_evals += pilot_batch * len(prop.flows)
    if defensive > 0:
        prop.defensive = defensive
        prop.train_evals += tail_centres(gen, crit, prop, threshold, generator)
    if refine_cfg.steps > 0:
        prop.train_evals += refine(gen, crit, prop, threshold, refine_cfg, generator)
    pilot = sample_proposal(gen, crit, prop, 0.0, generator, batch=pilot_batch)
    prop.train_seconds = time.perf_counter() - t0
    return prop, pilot
