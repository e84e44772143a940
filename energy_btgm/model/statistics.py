"""The statistics a generated week is judged on: every registered criterion and the diversity factor.

One function computes them for the model card (real against generated weeks) and for the statistics
term of training (``VAE.loss``), so that the model is fitted on exactly what it is judged on, and a
criterion registered in ``criteria.REGISTRY`` is both reported and fitted with no code of its own.
"""

from __future__ import annotations

import torch

import criteria

DIVERSITY_FACTOR = "diversity-factor"


def names() -> tuple[str, ...]:
    """Every registered criterion once (a minimised form is the same statistic as its maximised one), then
    the diversity factor."""
    return (*(name for name, c in criteria.REGISTRY.items() if c.direction == 1), DIVERSITY_FACTOR)


def compute(curves_kw: torch.Tensor, sum_peaks_kw: torch.Tensor, which: tuple[str, ...]) -> torch.Tensor:
    """(B, K) values of the statistics ``which`` for curves (B, T) [kW] with their groups' sums of member
    weekly peaks (B,) [kW]; differentiable. The diversity factor is the sum of member peaks over the
    group's peak (the group peak floored at 1 W)."""
    cols = []
    for name in which:
        if name == DIVERSITY_FACTOR:
            cols.append(sum_peaks_kw / curves_kw.amax(-1).clamp(min=1e-3))  # (B,)
        else:
            cols.append(criteria.get(name)(curves_kw))  # (B, T) -> (B,)
    return torch.stack(cols, dim=-1)  # (B, K)
