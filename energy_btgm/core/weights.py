"""Statistics of importance weights and of exponentially tilted samples (paper Eq. 29–31).

One home for the effective sample size (Kish: ``(Σw)² / Σw²``) and for the moments of
``q_β ∝ p·e^{βf}`` estimated from weighted samples. Pure numpy/scipy.

>>> import numpy as np
>>> float(ess(np.ones(10)))
10.0
>>> round(float(ess_from_log(np.log([1.0, 1.0, 2.0]))), 4)
2.6667
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
