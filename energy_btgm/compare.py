"""BTGM as a rare-event estimator against rejection sampling, at an equal wall-clock budget.

For each level u (e.g. 0.99, 0.999, 0.9999) of the criterion's hard version under p:
- rejection sampling (crude Monte-Carlo on p): samples of p for ``seconds``; the empirical quantile
  with a distribution-free order-statistic interval, and the exceedance ``P(f ≥ t)`` at the
  reference threshold t with a Wilson interval;
- BTGM: a flow tuned to KL = −log(1 − u) and refined toward the tail (one per day of the peak in the
  far tail), its training charged to the budget, then samples of q̂ (each flow mixed with defensive
  Gaussians N(μ_k, I), one per hour of the peak) for the rest of it; every sample carries
  ``w = p/q̂``, so ``P(f ≥ t) = E_q̂[w·1{f ≥ t}]`` (unbiased, CLT interval) and the quantile comes
  from the weighted CDF (interval by inverting the exceedance one);
- a reference: ≥ 10^7 samples of p, computed once per model and criterion and cached by the
  model's checksum.
Also per method: diversity factor and ADMD in the bulk and in the top 1 − u, decoder evaluations,
seconds, and the seconds to produce 10,000 effective scenarios in the tail.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy.stats import beta as beta_dist
from scipy.stats import norm

import criteria
from energy_btgm.btgm import TuneConfig, log_normal, tune
from energy_btgm.model import Generator, load_model
from energy_btgm.store import atomic_write_npz, atomic_write_text, sha256_file

BATCH = 8192
Z95 = float(norm.ppf(0.975))
# an importance proposal needs no exact KL: a short search (few steps, loose tolerance) and a small
# flow leave most of the budget to sampling; the refinement below does the fine fitting. Proposal
# flows are coupling flows (passes=2): the defensive mixture below needs their density at its draws,
# and a coupling flow's inverse takes two passes instead of one per latent dimension (4x faster here)
PROPOSAL_CONFIG = TuneConfig(transforms=3, hidden=64, steps=120, max_iter=2, tol=0.1, n_norm=8192, n_eval=8192, passes=2)
# the weekly peak's far tail has one mode per day of the week (on the demo model at 1e-4: Monday 62 %,
# Sunday 23 %, Tuesday 8 %, ...), and one reverse-KL flow keeps only one of them. Below a tail fraction
# of STRATIFY_BELOW, one small flow per day, each tuned quickly (an importance proposal needs no exact
# KL); at 0.99 one flow covers the tail well and costs less training
STRATIFIED_CRITERIA = ("weekly-peak",)
STRATIFY_BELOW = 1e-3
STRATUM_CONFIG = TuneConfig(transforms=3, hidden=64, steps=30, batch=256, max_iter=1, tol=0.3, n_norm=4096, n_eval=2048,
                            passes=2)
# Defensive importance sampling (Hesterberg 1995): each proposal flow draws this share of its samples
# from Σ_k π_k N(μ_k, I), one component per hour of the week at which its stratum's tail peaks (μ_k
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


REFINE_CONFIG = RefineConfig(steps=30, batch=2048)  # one flow: cheap, and at 0.99 it halves the weights' variance
STRATUM_REFINE_CONFIG = RefineConfig(steps=15, batch=1024)  # per day flow (seven of them)


@torch.no_grad()
def _score(gen: Generator, crit, z: torch.Tensor) -> dict[str, np.ndarray]:
    """Hard criterion, peak [kW], diversity factor and the peak's hour of the week (0 = Monday 0:00) of
    decoded latents z (B, Z)."""
    x, peaks = gen.decode_kw(z)
    peak, at = x.max(1)
    return {"f": crit(x).double().numpy(), "peak": peak.double().numpy(), "df": (peaks / peak.clamp_min(1e-6)).double().numpy(),
            "peak_hour": (at * 168 // x.shape[1]).numpy()}


def reference(gen: Generator, crit_name: str, cache_dir: Path, n: int = 10_000_000, seed: int = 2024,
              progress: bool = False) -> dict[str, np.ndarray]:
    """n samples of p (f, peak, df), cached under ``cache_dir`` by model checksum, criterion and n."""
    key = f"{sha256_file(Path(gen.path) / 'weights.pt')[:16]}-{crit_name}-{n}-{seed}"
    path = Path(cache_dir) / f"reference-{key}.npz"
    if path.exists():
        d = np.load(path)
        return {k: d[k] for k in d.files}
    crit = criteria.get(crit_name)
    g = torch.Generator().manual_seed(seed)
    parts = {"f": [], "peak": [], "df": []}
    it = range(0, n, BATCH)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc=f"reference: {n:,} samples of p", unit=" batch")
    for i in it:
        s = _score(gen, crit, torch.randn(min(BATCH, n - i), gen.latent_dim, generator=g))
        for k in parts:
            parts[k].append(s[k].astype(np.float32))
    out = {k: np.concatenate(v) for k, v in parts.items()}
    atomic_write_npz(path, **out)
    return out


def wilson(k: int, n: int) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    d = 1 + Z95 ** 2 / n
    c = (p + Z95 ** 2 / (2 * n)) / d
    h = Z95 * math.sqrt(p * (1 - p) / n + Z95 ** 2 / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def rejection_estimates(f: np.ndarray, u: float, threshold: float) -> dict:
    """Quantile (order-statistic 95 % interval) and exceedance (Wilson interval) from samples of p."""
    n = len(f)
    fs = np.sort(f)
    q = float(np.quantile(f, u))
    lo_r, hi_r = (int(beta_dist.ppf(a, n * u, n * (1 - u) + 1) * n) for a in (0.025, 0.975))
    k = int((f >= threshold).sum())
    return {"quantile": q, "quantile_ci": [float(fs[max(lo_r - 1, 0)]), float(fs[min(hi_r, n - 1)])],
            "exceedance": k / n, "exceedance_ci": list(wilson(k, n)),
            "exceedance_var": (k / n) * (1 - k / n) / n, "tail_samples": k, "n": n}


def masses(w: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Each sample's share of the probability mass: its weight over the number its proposal drew."""
    return w / np.bincount(group)[group]


def weighted_estimates(f: np.ndarray, w: np.ndarray, u: float, threshold: float, group: np.ndarray | None = None) -> dict:
    """Importance-sampling quantile and exceedance from samples of proposals with weights w = p/q̂.

    ``group`` says which proposal drew each sample (stratified sampling: proposal d covers stratum d,
    and w is 0 for its samples outside it); each group's mean estimates its stratum's share, and the
    estimates add up. One group (the default) is plain importance sampling.
    """
    n = len(f)
    group = np.zeros(n, np.int64) if group is None else np.asarray(group)
    sizes = np.bincount(group)
    m = masses(w, group)
    ind = m * (f >= threshold)
    p_hat = float(ind.sum())

    def var_of(mask):  # Σ_d Var_d(w·1{mask}) / N_d
        v = 0.0
        for d in np.flatnonzero(sizes > 1):
            x = (w * mask)[group == d]
            v += float(x.var(ddof=1)) / len(x)
        return v

    var = var_of(f >= threshold)
    se = math.sqrt(var)
    order = np.argsort(f)[::-1]  # descending: survival function
    surv = np.cumsum(m[order])  # P(f ≥ f_(i))
    fs = f[order]

    def inv(p):  # smallest x with P(f ≥ x) ≥ p
        i = int(np.searchsorted(surv, p))
        return float(fs[min(i, n - 1)])

    tail = 1 - u
    q = inv(tail)
    # quantile interval: invert the exceedance interval at the estimated quantile
    se_q = math.sqrt(var_of(f >= q))
    q_lo, q_hi = inv(tail + Z95 * se_q), inv(max(tail - Z95 * se_q, 1e-300))
    tm = m[f >= q]
    ess_tail = float(tm.sum() ** 2 / (tm ** 2).sum()) if len(tm) and tm.any() else 0.0
    return {"quantile": q, "quantile_ci": [q_lo, q_hi], "exceedance": p_hat,
            "exceedance_ci": [max(0.0, p_hat - Z95 * se), p_hat + Z95 * se], "exceedance_var": var,
            "ess": float(m.sum() ** 2 / (m ** 2).sum()) if m.any() else 0.0, "ess_tail": ess_tail,
            "tail_samples": int(((f >= q) & (w > 0)).sum()), "n": n, "proposals": int(len(sizes))}


def _df_admd(df: np.ndarray, peak: np.ndarray, n_group: int, mask: np.ndarray, w: np.ndarray | None = None) -> dict:
    w = np.ones(len(df)) if w is None else w
    m = mask & np.isfinite(df)
    if not m.any():
        return {"df_mean": float("nan"), "admd_kw_mean": float("nan"), "n": 0}
    return {"df_mean": float(np.average(df[m], weights=w[m])), "admd_kw_mean": float(np.average(peak[m] / n_group, weights=w[m])),
            "n": int(m.sum())}


def run_rejection(gen, crit, seconds: float, seed: int) -> tuple[dict, float, int]:
    g = torch.Generator().manual_seed(seed)
    _score(gen, crit, torch.randn(256, gen.latent_dim, generator=g))  # warm up
    t0 = time.perf_counter()
    parts = {"f": [], "peak": [], "df": []}
    while time.perf_counter() - t0 < seconds:
        s = _score(gen, crit, torch.randn(BATCH, gen.latent_dim, generator=g))
        for k in parts:
            parts[k].append(s[k])
    out = {k: np.concatenate(v) for k, v in parts.items()}
    return out, time.perf_counter() - t0, len(out["f"])


@dataclasses.dataclass
class Proposal:
    """BTGM flows as importance proposals. Stratified (weekly peak): flow d is tuned toward the peak of
    day d and is used only for curves whose peak falls on day d, so that every day's share of the tail
    is estimated, not only the day one flow settles on (a reverse-KL flow keeps one mode)."""

    flows: list
    stratified: bool
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
        c, log_mix = self.centres[d], self.mix[d].log()
        k = int(round(self.defensive * n))
        z, log_q_flow, _ = flow.sample(n - k, generator=generator)
        if k:
            z_def = c[torch.multinomial(self.mix[d], k, replacement=True, generator=generator)]
            z_def = z_def + torch.randn(k, flow.dim, generator=generator)
            z, log_q_flow = torch.cat([z, z_def]), torch.cat([log_q_flow, flow.log_prob(z_def)])
        log_q_def = torch.logsumexp(log_mix + log_normal(z[:, None, :] - c[None]), 1)
        log_q = torch.logaddexp(math.log1p(-self.defensive) + log_q_flow, math.log(self.defensive) + log_q_def)
        return z, log_q, log_normal(z)


def _in_stratum(prop: Proposal, scores: dict, d: int) -> np.ndarray:
    """Which scored curves belong to flow d's stratum: those peaking on day d (all, unstratified)."""
    return scores["peak_hour"] // 24 == d if prop.stratified else np.ones(len(scores["f"]), bool)


def _pilot_quantile(pilot: dict, u: float) -> float:
    """The level-u quantile estimated from a pilot's weighted draws."""
    return weighted_estimates(pilot["f"], pilot["w"], u, 0.0, pilot["group"])["quantile"]


def _stratum_criterion(crit, gen: Generator, d: int):
    T = gen.meta.get("points_per_week") or (gen.vae.cfg.n_features - 1)
    a, b = d * T // 7, (d + 1) * T // 7
    return lambda z: crit.train(gen.decode_kw(z)[0][:, a:b])


def train_proposal(gen: Generator, crit, u: float, cfg: TuneConfig, seed: int, stratified: bool | None = None) -> Proposal:
    """Tune the proposal flow(s) to KL = −log(1 − u): one flow, or one per day of the peak (``STRATUM_CONFIG`` each)."""
    t0 = time.perf_counter()
    if stratified is None:
        stratified = crit.name in STRATIFIED_CRITERIA and round(1 - u, 12) <= STRATIFY_BELOW
    fns = [_stratum_criterion(crit, gen, d) for d in range(7)] if stratified else [lambda z: crit.train(gen.decode_kw(z)[0])]
    c = STRATUM_CONFIG if stratified else cfg
    flows, evals = [], 0
    for i, fn in enumerate(fns):
        with warnings.catch_warnings():  # a proposal needs no exact KL: the short search's warning is noise here
            warnings.simplefilter("ignore", RuntimeWarning)
            res = tune(fn, gen.latent_dim, -math.log(1 - u), dataclasses.replace(c, seed=seed + 101 * i))
        flows.append(res.flow)
        evals += len(res.path) * c.steps * c.batch + c.n_norm * 2 + len(res.path) * c.n_eval
    return Proposal(flows, stratified, np.full(len(flows), 1 / len(flows)), time.perf_counter() - t0, evals)


def sample_proposal(gen: Generator, crit, prop: Proposal, seconds: float, generator: torch.Generator,
                    batch: int = BATCH) -> dict[str, np.ndarray]:
    """Draw from the proposal flows in the proportions ``prop.share`` for ``seconds``, ``batch`` draws of
    one flow at a time (at least one batch each; full batches keep the flows' small layers efficient):
    f, peak, df, the weight w = p/q̂ (0 outside the drawing flow's stratum) and the drawing flow."""
    k = len(prop.flows)
    drawn = np.zeros(k)
    parts = {"f": [], "peak": [], "df": [], "w": [], "group": []}
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds or (drawn == 0).any():
        d = int(np.argmin(drawn / prop.share))  # the flow furthest behind its share (shares are > 0)
        with torch.no_grad():
            z, log_q, log_p = prop.draw(d, batch, generator)
        s = _score(gen, crit, z)
        w = np.exp((log_p - log_q).double().numpy()) * _in_stratum(prop, s, d)
        for key in ("f", "peak", "df"):
            parts[key].append(s[key])
        parts["w"].append(w)
        parts["group"].append(np.full(batch, d))
        drawn[d] += batch
    return {key: np.concatenate(v) for key, v in parts.items()}


def allocate(prop: Proposal, pilot: dict, u: float, floor: float = 0.05) -> None:
    """Neyman allocation from a pilot: each flow's share ∝ the spread of its w·1{f ≥ t̂} (t̂ the pilot's
    quantile), with a floor so that no stratum goes unsampled."""
    if len(prop.flows) == 1:
        return
    t = _pilot_quantile(pilot, u)
    sd = np.array([float((pilot["w"] * (pilot["f"] >= t))[pilot["group"] == d].std()) for d in range(len(prop.flows))])
    sd = np.maximum(sd, floor * sd.max()) if sd.max() > 0 else np.ones(len(sd))
    prop.share = sd / sd.sum()


@torch.no_grad()
def _tail_draws(gen: Generator, crit, prop: Proposal, d: int, n: int, threshold: float, generator: torch.Generator,
                spread: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """n draws of proposal d (of flow d alone, its base widened by ``spread``, until the defensive
    components are set; of the mixture after); those in its stratum's tail (f ≥ threshold), their
    self-normalised weights p/q and the hour of the week of their peak (all empty when none land there)."""
    if prop.centres is None:
        z, log_q, log_p = prop.flows[d].sample(n, generator=generator, spread=spread)
    else:  # the defensive components explore
        z, log_q, log_p = prop.draw(d, n, generator)
    s = _score(gen, crit, z)
    hit = (s["f"] >= threshold) & _in_stratum(prop, s, d)
    at = torch.as_tensor(hit)
    return z[at], torch.softmax((log_p - log_q)[at], 0), s["peak_hour"][hit]


def refine(gen: Generator, crit, prop: Proposal, threshold: float, cfg: RefineConfig, generator: torch.Generator) -> int:
    """Move each flow toward p(z | f ≥ threshold, its stratum), the zero-variance proposal, by weighted
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
def tail_centres(gen: Generator, crit, prop: Proposal, threshold: float, generator: torch.Generator, n: int = 8192,
                 min_hits: int = 5, spread: float = 1.5) -> int:
    """Set each flow's defensive components: one per hour of the week at which its draws in its
    stratum's tail (f ≥ threshold) peak (hours with at least ``min_hits`` of them), centred at their
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
        mass = torch.stack([w[g].sum() for g in groups])
        centres.append(torch.stack([(w[g, None] * z[g]).sum(0) for g in groups]) / mass[:, None])
        mix.append(0.5 * mass / mass.sum() + 0.5 / len(mass))
    prop.centres, prop.mix = centres, mix
    return len(prop.flows) * n


def prepare_proposal(gen: Generator, crit, u: float, cfg: TuneConfig, seed: int, generator: torch.Generator,
                     refine_cfg: RefineConfig | None = None, defensive: float = DEFENSIVE) -> tuple[Proposal, dict]:
    """Everything before the sampling proper, charged to BTGM's budget: tune the flow(s), a pilot for the
    tail threshold, place the defensive components, refine the flows on draws of the mixture, then a
    pilot of the final proposals that allocates the samples among them. ``refine_cfg`` defaults to
    ``STRATUM_REFINE_CONFIG`` for day flows and ``REFINE_CONFIG`` for one flow (``steps=0`` skips
    it); ``defensive=0`` leaves the flows without a defensive component. Returns the proposal (``train_seconds`` covers all of it) and that
    last pilot (valid samples)."""
    if not 0 <= defensive < 1:
        raise ValueError(f"the defensive share must lie in [0, 1), got {defensive}")
    t0 = time.perf_counter()
    prop = train_proposal(gen, crit, u, cfg, seed)
    if refine_cfg is None:
        refine_cfg = STRATUM_REFINE_CONFIG if prop.stratified else REFINE_CONFIG
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
    allocate(prop, pilot, u)
    prop.train_seconds = time.perf_counter() - t0
    return prop, pilot


def run_btgm(gen, crit, u: float, seconds: float, seed: int, cfg: TuneConfig) -> tuple[dict, float, float, int]:
    """Prepare the proposal (counted in the budget), then sample it until the budget is spent."""
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(seed + 1)
    prop, pilot = prepare_proposal(gen, crit, u, cfg, seed, g)
    rest = sample_proposal(gen, crit, prop, max(seconds - (time.perf_counter() - t0), 0.0), g)
    out = {k: np.concatenate([pilot[k], rest[k]]) for k in pilot}
    return out, prop.train_seconds, time.perf_counter() - t0, prop.train_evals + len(out["f"])


def out_dir_for(reports: Path, criterion: str, group_size: int) -> Path:
    """Where a comparison is written under the reports folder (and where ``report`` finds it)."""
    return Path(reports) / "compare" / f"{criterion}-n{group_size}"


def compare(model_dir: Path, criterion: str, levels: list[float], seconds: float, out_dir: Path, cache_dir: Path,
            seed: int = 0, n_reference: int = 10_000_000, cfg: TuneConfig | None = None, real_test: np.ndarray | None = None,
            progress: bool = False) -> dict:
    """Run the comparison and write ``compare.json`` in ``out_dir``; return its content."""
    gen = load_model(model_dir)
    crit = criteria.get(criterion)
    if crit.direction != 1:
        raise ValueError(f"compare estimates upper quantiles; {criterion} is minimised - use its maximised form")
    for u in levels:
        if not 0 < u < 1:
            raise ValueError(f"--levels must lie in (0, 1), got {u}")
    cfg = cfg or PROPOSAL_CONFIG
    n_group = gen.meta["group_size"]
    curves_file = Path(gen.meta.get("curves_file", ""))
    if real_test is None and curves_file.is_file():  # the real test weeks, where there are enough of them
        from energy_btgm.curves import read_groups

        test = read_groups(curves_file.parent, n_group, split="test", curves_dir=curves_file.parent)
        if len(test):
            real_test = crit(torch.tensor(test.attrs["curves_kw"])).numpy()
    ref = reference(gen, criterion, cache_dir, n=n_reference, progress=progress)
    rs, rs_seconds, rs_n = run_rejection(gen, crit, seconds, seed)
    result = {"criterion": criterion, "unit": crit.unit, "model": str(model_dir),
              "model_sha256": sha256_file(Path(model_dir) / "weights.pt"), "group_size": n_group, "seconds_budget": seconds,
              "seed": seed, "reference_samples": len(ref["f"]), "levels": {}}
    rate = rs_n / rs_seconds  # curves per second on p
    bulk = _df_admd(ref["df"], ref["peak"], n_group, np.ones(len(ref["df"]), bool))
    result["bulk"] = {"rejection": _df_admd(rs["df"], rs["peak"], n_group, np.ones(rs_n, bool)), "reference": bulk}
    for u in levels:
        t_ref = float(np.quantile(ref["f"], u))
        k_ref = int((ref["f"] >= t_ref).sum())
        entry = {"reference": {"quantile": t_ref, "exceedance": k_ref / len(ref["f"]), "tail_samples": k_ref,
                               "n": len(ref["f"]), "seconds": None,
                               **{f"tail_{k}": v for k, v in _df_admd(ref["df"], ref["peak"], n_group, ref["f"] >= t_ref).items()}}}
        rej = rejection_estimates(rs["f"], u, t_ref)
        rej.update(decoder_evaluations=rs_n, seconds=rs_seconds,
                   seconds_per_10k_effective_tail=10_000 / max(rate * (1 - u), 1e-12),
                   **{f"tail_{k}": v for k, v in _df_admd(rs["df"], rs["peak"], n_group, rs["f"] >= rej["quantile"]).items()})
        bt, t_train, bt_seconds, evals = run_btgm(gen, crit, u, seconds, seed + int(u * 1e6), cfg)
        est = weighted_estimates(bt["f"], bt["w"], u, t_ref, bt["group"])
        sampling_seconds = max(bt_seconds - t_train, 1e-9)
        ess_tail_rate = est["ess_tail"] / sampling_seconds
        est.update(decoder_evaluations=evals, seconds=bt_seconds, train_seconds=t_train,
                   seconds_per_10k_effective_tail=t_train + 10_000 / max(ess_tail_rate, 1e-12),
                   **{f"tail_{k}": v for k, v in _df_admd(bt["df"], bt["peak"], n_group, (bt["f"] >= est["quantile"]) & (bt["w"] > 0),
                                                                masses(bt["w"], bt["group"])).items()})
        entry["rejection"], entry["btgm"] = rej, est
        # rejection's variance is the exact binomial one at the number of samples its budget afforded
        entry["binomial_variance_rejection"] = (1 - u) * u / rs_n
        entry["variance_ratio_rejection_over_btgm"] = (entry["binomial_variance_rejection"] / est["exceedance_var"]
                                                       if est["exceedance_var"] > 0 else None)
        if real_test is not None and len(real_test) * (1 - u) >= 10:  # at least 10 real weeks above it
            entry["real_test_quantile"] = float(np.quantile(real_test, u))
            entry["real_test_curves"] = int(len(real_test))
        result["levels"][str(u)] = entry
    atomic_write_text(Path(out_dir) / "compare.json", json.dumps(result, indent=1))
    return result
