"""Rare-event estimators: pure functions of criterion values, importance weights and strata.

Nothing here needs a model: each takes arrays (f, w, the proposal that drew each sample) and returns
point estimates with 95 % intervals, so each is tested against closed forms.

- ``rejection_estimates``: crude Monte-Carlo on samples of p; the empirical quantile with a
  distribution-free order-statistic interval, and the exceedance ``P(f ≥ t)`` with a Wilson interval;
- ``weighted_estimates``: importance sampling with ``w = p/q̂``, optionally stratified (proposal d
  covers stratum d; the strata's estimates add up): ``P(f ≥ t) = E_q̂[w·1{f ≥ t}]`` (unbiased, CLT
  interval) and the quantile from the weighted survival function (interval by inverting the
  exceedance one), with the effective sample size of the weights overall and in the tail;
- ``df_admd``: the (weighted) mean diversity factor and ADMD of the curves in a mask.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import beta as beta_dist
from scipy.stats import norm

from energy_btgm.core.weights import ess

Z95 = float(norm.ppf(0.975))


def wilson(k: int, n: int) -> tuple[float, float]:
    """Wilson score 95 % interval of a binomial proportion k / n."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    d = 1 + Z95**2 / n
    c = (p + Z95**2 / (2 * n)) / d
    h = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def rejection_estimates(f: np.ndarray, u: float, threshold: float) -> dict:
    """Quantile (order-statistic 95 % interval) and exceedance (Wilson interval) from samples of p."""
    n = len(f)
    fs = np.sort(f)
    q = float(np.quantile(f, u))
    lo_r, hi_r = (int(beta_dist.ppf(a, n * u, n * (1 - u) + 1) * n) for a in (0.025, 0.975))
    k = int((f >= threshold).sum())
    return {
        "quantile": q,
        "quantile_ci": [float(fs[max(lo_r - 1, 0)]), float(fs[min(hi_r, n - 1)])],
        "exceedance": k / n,
        "exceedance_ci": list(wilson(k, n)),
        "exceedance_var": (k / n) * (1 - k / n) / n,
        "tail_samples": k,
        "n": n,
    }


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
    ess_tail = ess(m[f >= q])
    return {
        "quantile": q,
        "quantile_ci": [q_lo, q_hi],
        "exceedance": p_hat,
        "exceedance_ci": [max(0.0, p_hat - Z95 * se), p_hat + Z95 * se],
        "exceedance_var": var,
        "ess": ess(m),
        "ess_tail": ess_tail,
        "tail_samples": int(((f >= q) & (w > 0)).sum()),
        "n": n,
        "proposals": int(len(sizes)),
    }


def df_admd(df: np.ndarray, peak: np.ndarray, n_group: int, mask: np.ndarray, w: np.ndarray | None = None) -> dict:
    """Mean diversity factor and ADMD [kW] (= peak / group size) of the curves in ``mask``, weighted by ``w``
    (None where no curve is in ``mask``: JSON has no NaN)."""
    w = np.ones(len(df)) if w is None else w
    m = mask & np.isfinite(df)
    if not m.any():
        return {"df_mean": None, "admd_kw_mean": None, "n": 0}
    return {
        "df_mean": float(np.average(df[m], weights=w[m])),
        "admd_kw_mean": float(np.average(peak[m] / n_group, weights=w[m])),
        "n": int(m.sum()),
    }
