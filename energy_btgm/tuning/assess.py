"""Ex-ante assessment of equivalent criteria (paper section 4.2; DESIGN.md §1).

Monotone transforms of a criterion express the same goal but do not train equally well. Each
variant is normalised under p (mean 0, variance 1); the distribution of ``‖∇_z f̃(z)‖`` over samples
of p is summarised by the share of near-zero gradients (flat regions give the flow no signal) and
the ratio of its 99th percentile to its median (cliffs make training unstable). The recommended
variant has few zeros and the most compact distribution.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import criteria
from energy_btgm.core.figures import new_figure, png_bytes
from energy_btgm.model.vae import load_model
from energy_btgm.store import atomic_write_bytes, atomic_write_json

NEAR_ZERO = 1e-3  # gradient norms below this share of the median count as zero

VARIANTS: dict[str, dict[str, Callable[[torch.Tensor], torch.Tensor]]] = {
    "weekly-peak": {
        "hard max": lambda x: criteria.weekly_peak(x),
        "smooth max (τ=0.25 kW)": lambda x: criteria.weekly_peak(x, smooth=0.25),
        "log of peak": lambda x: torch.log(criteria.weekly_peak(x).clamp_min(1e-3)),
        "log of smooth max": lambda x: torch.log(criteria.weekly_peak(x, smooth=0.25)),
    },
}


def gradient_norms(f: Callable, decode: Callable, dim: int, n: int, seed: int) -> np.ndarray:
    """‖∇_z f̃(z)‖ for n samples z ~ N(0, I), f̃ normalised under the same samples. Returns (n,)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, dim, generator=g).requires_grad_(True)
    vals = f(decode(z))  # (n, T) curves -> (n,)
    (grad,) = torch.autograd.grad(vals.sum(), z)  # samples are independent: row i is ∇f(z_i)
    std = float(vals.detach().std())
    return (grad.norm(dim=1) / max(std, 1e-12)).numpy()


def summarise(norms: np.ndarray) -> dict:
    med = float(np.median(norms))
    return {
        "median": med,
        "p99": float(np.percentile(norms, 99)),
        "p99_over_median": float(np.percentile(norms, 99) / max(med, 1e-12)),
        "share_near_zero": float((norms < NEAR_ZERO * max(med, 1e-12)).mean()) if med > 0 else 1.0,
    }


def recommend(summaries: dict[str, dict]) -> str:
    """Fewest near-zero gradients first (within 1 %), then the most compact tail."""
    best_zero = min(s["share_near_zero"] for s in summaries.values())
    ok = {k: s for k, s in summaries.items() if s["share_near_zero"] <= best_zero + 0.01}
    return min(ok, key=lambda k: ok[k]["p99_over_median"])


def assess(
    model_dir: Path, criterion: str, out_dir: Path, n: int = 10_000, seed: int = 0, variants: list[str] | None = None
) -> dict:
    """Assess the variants of ``criterion`` (or the named ``variants``: registered criteria or import paths)
    on the model's decoder; write a figure and assess.json."""
    gen = load_model(model_dir)
    if variants:
        chosen = {}
        for v in variants:
            c = criteria.get(v)
            chosen[v] = c.train_fn or c.fn
        variants = chosen
    elif criterion in VARIANTS:
        variants = VARIANTS[criterion]
    else:
        c = criteria.get(criterion)
        variants = {f"{c.name} (as reported)": c.fn}
        if c.train_fn is not None:
            variants[f"{c.name} (training surrogate)"] = c.train_fn
    decode = lambda z: gen.decode_kw(z)[0]  # noqa: E731
    norms = {name: gradient_norms(fn, decode, gen.latent_dim, n, seed) for name, fn in variants.items()}
    summaries = {k: summarise(v) for k, v in norms.items()}
    best = recommend(summaries)
    result = {
        "criterion": criterion,
        "model": str(model_dir),
        "samples": n,
        "seed": seed,
        "variants": summaries,
        "recommended": best,
        "near_zero_threshold": f"{NEAR_ZERO:g} x median",
    }
    fig, ax = new_figure(1, figsize=(8, 3.6))
    lo = min(max(v[v > 0].min(), 1e-6) for v in norms.values() if (v > 0).any())
    hi = max(v.max() for v in norms.values())
    bins = np.logspace(math.log10(lo), math.log10(hi), 60)
    for name, v in norms.items():
        ax.hist(
            np.clip(v, lo, None),
            bins=bins,
            histtype="step",
            lw=1.4,
            label=f"{name}: zeros {summaries[name]['share_near_zero']:.1%}, p99/median {summaries[name]['p99_over_median']:.1f}"
            + ("  ← recommended" if name == best else ""),
        )
    ax.set(
        xscale="log",
        xlabel="‖∇z f̃(z)‖ (criterion normalised under p)",
        ylabel=f"count of {n:,} samples of p",
        title=f"{criterion}: gradient norms of equivalent variants",
    )
    ax.legend(fontsize=7)
    out_dir = Path(out_dir)
    atomic_write_bytes(out_dir / "gradients.png", png_bytes(fig))
    atomic_write_json(out_dir / "assess.json", result)
    result["figure"] = str(out_dir / "gradients.png")
    return result
