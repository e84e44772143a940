"""Statistics of importance weights and of exponentially tilted samples (paper Eq. 29–31).

One home for the effective sample size (Kish: ``(Σw)² / Σw²``) and for the moments of
``q_β ∝ p·e^{βf}`` estimated from weighted samples. Pure numpy/scipy.

>>> import numpy as np
>>> float(ess(np.ones(10)))
10.0
>>> round(float(ess_from_log(np.log([1.0, 1.0, 2.0]))), 4)
2.6667

Beside the ESS, the Pareto k̂ of the weights (``pareto_khat``): the shape of a generalized Pareto
fitted to their upper tail, the diagnostic of Pareto-smoothed importance sampling (Vehtari,
Simpson, Gelman, Yao & Gabry 2024, JMLR 25(72)). k̂ < 0.5: the weights have a finite variance; up
to 0.7 estimates are usable with enough draws; above 0.7 the estimate can be far off however many
draws, whatever the ESS says.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import logsumexp


def ess(w: np.ndarray) -> float:
    """Kish's effective sample size of non-negative weights w (any scale): (Σw)² / Σw²; 0 if all are 0."""
    w = np.asarray(w, np.float64)
    s2 = float((w**2).sum())
    return float(w.sum() ** 2 / s2) if s2 > 0 else 0.0


def ess_from_log(log_w: np.ndarray) -> float:
    """The effective sample size of weights given by their logarithms, without overflow."""
    log_w = np.asarray(log_w, np.float64)
    return float(np.exp(2 * logsumexp(log_w) - logsumexp(2 * log_w)))


KHAT_MAX = 0.7  # above it an importance-sampling estimate is unreliable (Vehtari et al. 2024)
ESS_MIN = 100.0  # below it too few weighted draws carry the estimate


def pareto_khat(log_w: np.ndarray) -> float:
    """The Pareto k̂ of importance weights given by their logarithms (PSIS diagnostic).

    The largest M = min(n/5, 3√n) weights are fitted by a generalized Pareto distribution above the
    (M+1)-th largest, with the empirical-Bayes estimator of Zhang & Stephens (2009) and the weakly
    informative prior on k of Vehtari et al. (2024), as ``loo`` and ArviZ do. Fewer than 5 tail draws
    above the cutoff: inf (nothing can be said, so not trusted). All tail weights equal (a bounded tail): −1.

    >>> rng = np.random.default_rng(0)
    >>> round(pareto_khat(np.log(rng.pareto(2.0, 100_000) + 1)), 1)  # Pareto tail of index 2: k = 1/2
    0.5
    """
    lw = np.sort(np.asarray(log_w, np.float64))
    lw = lw[np.isfinite(lw)]
    n = len(lw)
    m = int(math.ceil(min(0.2 * n, 3 * math.sqrt(n))))
    if m < 5:
        return math.inf
    cutoff = lw[-m - 1]
    x = np.exp(lw[-m:] - lw[-1]) - math.exp(cutoff - lw[-1])  # (M,) exceedances, ascending, scaled by the max
    x = x[x > 0]  # weights tied with the cutoff (equal weights of a stratum) carry no tail information
    if len(x) == 0:
        return -1.0
    if len(x) < 5:  # a handful of weights above a flat rest: a tail that cannot be fitted, so not trusted
        return math.inf
    return _gpd_k(x)


def _gpd_k(x: np.ndarray) -> float:
    """Shape k of a generalized Pareto fitted to exceedances ``x`` (sorted ascending, positive maximum):
    Zhang & Stephens (2009) posterior mean over a grid of b = −k/σ, then the prior k ~ 0.5 weighted by 10."""
    n = len(x)
    m_grid = 30 + int(math.sqrt(n))
    b = 1 - np.sqrt(m_grid / (np.arange(1, m_grid + 1) - 0.5))  # (G,)
    b = b / (3 * x[int(n / 4 + 0.5) - 1]) + 1 / x[-1]
    k = np.log1p(-b[:, None] * x).mean(axis=1)  # (G,)
    profile = n * (np.log(-b / k) - k - 1)  # (G,) profile log-likelihood
    weights = np.exp(-logsumexp(profile - profile[:, None], axis=1))  # (G,) normalised likelihoods, no overflow
    keep = weights >= 10 * np.finfo(float).eps
    b_post = float((b[keep] * weights[keep]).sum() / weights[keep].sum())
    k_post = float(np.log1p(-b_post * x).mean())
    return (n * k_post + 10 * 0.5) / (n + 10)


def diagnose(log_w: np.ndarray, group: np.ndarray | None = None) -> dict:
    """ESS, Pareto k̂ and whether an estimate from these weights can be trusted, with what to do if not.

    With ``group`` (stratified sampling: each stratum's estimate uses its own proposal's draws, weights on
    their own scale), k̂ is the worst stratum's and the ESS the sum of the strata's; strata with fewer than
    20 draws are left out. Pooling strata would mix the scales and show a heavy tail that no estimate has.
    """
    log_w = np.asarray(log_w, np.float64)
    if group is None:
        e, k = ess_from_log(log_w), pareto_khat(log_w)
    else:
        group = np.asarray(group)
        parts = [log_w[group == d] for d in np.unique(group)]
        parts = [x for x in parts if len(x) >= 20] or [log_w]
        e, k = sum(ess_from_log(x) for x in parts), max(pareto_khat(x) for x in parts)
    problems = []
    if not k <= KHAT_MAX:
        problems.append(f"Pareto k̂ {k:.2f} > {KHAT_MAX}: the weights' tail is too heavy for a reliable estimate")
    if not e >= ESS_MIN:
        problems.append(f"ESS {e:.0f} < {ESS_MIN:.0f}: too few weighted draws carry the estimate")
    return {"ess": e, "pareto_k": k if math.isfinite(k) else None, "reliable": not problems, "problems": problems}


def tilted_moments(f: np.ndarray, betas: np.ndarray, log_w: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per β: E_qβ f, KL(qβ‖p) and the ESS of the tilted weights, from samples f_i of a proposal q̂ with
    log_w_i = log p(z_i) − log q̂(z_i) (Eq. 29–31); ``log_w=None`` means the samples are drawn from p."""
    f = np.asarray(f, np.float64)
    n = len(f)
    base = np.zeros(n) if log_w is None else np.asarray(log_w, np.float64)
    out: dict[str, list] = {"beta": [], "mean_f": [], "kl": [], "ess": []}
    for b in np.atleast_1d(betas):
        lw = base + b * f  # (n,) log of p/q̂ · e^{βf}
        log_z = logsumexp(lw) - math.log(n)
        w = np.exp(lw - logsumexp(lw))  # (n,) self-normalised
        mean_f = float((w * f).sum())
        out["beta"].append(float(b))
        out["mean_f"].append(mean_f)
        out["kl"].append(float(b * mean_f - log_z))
        out["ess"].append(ess(w))
    return {k: np.array(v) for k, v in out.items()}
