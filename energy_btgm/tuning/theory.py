"""The tuned model against the theory (paper Eq. 29–31, appendix C): theory curves and Pareto efficiency.

Theory points come from samples of p where their effective sample size holds and, at high KL where
it collapses, from the tuned flow used as importance proposal (``E_qβ[h] = E_q̂[h·w·e^{βf}] /
E_q̂[w·e^{βf}]``, ``w = p/q̂``). A theory point whose ESS is below ``MIN_ESS`` is flagged and never used.
"""

from __future__ import annotations

import numpy as np

from energy_btgm.core.figures import new_figure, png_bytes
from energy_btgm.core.weights import tilted_moments

MIN_ESS = 200.0


def theory_curve(f_p: np.ndarray, f_q: np.ndarray, log_w: np.ndarray, betas: np.ndarray) -> dict:
    """Per β, the estimate (from p or from q̂) with the larger ESS; ``usable`` where ESS ≥ MIN_ESS."""
    a, b = tilted_moments(f_p, betas), tilted_moments(f_q, betas, log_w)
    use_q = b["ess"] > a["ess"]
    out = {k: np.where(use_q, b[k], a[k]) for k in ("beta", "mean_f", "kl", "ess")}
    out["source"] = np.where(use_q, "q", "p")
    out["usable"] = out["ess"] >= MIN_ESS
    return out


def pareto_efficiency(theory: dict, kl_hat: float, mean_hat: float, mean_p: float) -> tuple[float, float, float]:
    """(efficiency, β*, E_qβ* f) with β* the β whose theoretical KL equals ``kl_hat`` (usable points only)."""
    ok = theory["usable"]
    kl, mean, beta = theory["kl"][ok], theory["mean_f"][ok], theory["beta"][ok]
    if len(kl) < 2 or not kl.min() <= kl_hat <= kl.max():
        return float("nan"), float("nan"), float("nan")
    order = np.argsort(kl)
    beta_star = float(np.interp(kl_hat, kl[order], beta[order]))
    mean_star = float(np.interp(kl_hat, kl[order], mean[order]))
    return (mean_hat - mean_p) / (mean_star - mean_p), beta_star, mean_star


def pareto_figure(theory: dict, path: list[dict], kl_hat: float, mean_hat: float, name: str) -> bytes:
    """Paper Fig. 3–5 style, as PNG: E f vs β, KL vs β, E f vs KL; theory as a line, the tuned model as markers."""
    ok = theory["usable"]
    fig, ax = new_figure(3, figsize=(13, 3.4))
    panels = (("beta", "mean_f", "β", "E f̃"), ("beta", "kl", "β", "KL(q‖p) [nats]"), ("kl", "mean_f", "KL(q‖p) [nats]", "E f̃"))
    for a, (x, y, xl, yl) in zip(ax, panels):
        a.plot(theory[x][ok], theory[y][ok], "-", label="theory (Eq. 29–31)")
        if (~ok).any():
            a.plot(theory[x][~ok], theory[y][~ok], ":", color="grey", label=f"theory, ESS < {MIN_ESS:.0f} (not used)")
        a.plot([p[x] for p in path], [p[y] for p in path], "o", mfc="none", label="β path (flow)")
        a.set(xlabel=xl, ylabel=yl)
    ax[2].plot([kl_hat], [mean_hat], "r*", ms=12, label="tuned model")
    ax[2].legend(fontsize=7)
    fig.suptitle(f"{name}: tuned model against the optimal Pareto front")
    return png_bytes(fig)
