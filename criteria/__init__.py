"""Named criteria on weekly load curves: small pure differentiable functions ``(*, T) -> (*)``.

A curve is in kW on the Monday-00:00 weekly grid, T points (336 half-hourly, 168 hourly, 672 at
15 min); the interval is ``168 / T`` hours. Each criterion has a name, a unit, a direction
(``+1``: BTGM makes it large; ``-1``: small) and a one-line docstring. The same function scores
banks and drives tuning; a smooth surrogate (``weekly-peak``'s ``smooth``) documents its
temperature and is used for training only, the hard version for reporting.

>>> import torch
>>> x = torch.ones(2, 336)
>>> get("weekly-energy")(x)
tensor([168., 168.])
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Callable

import torch

HOURS_PER_WEEK = 168.0


def _dt_h(x: torch.Tensor) -> float:
    return HOURS_PER_WEEK / x.shape[-1]


def _wednesday(x: torch.Tensor) -> torch.Tensor:
    T = x.shape[-1]
    return x[..., 2 * T // 7 : 3 * T // 7]  # (*, T/7) Monday 00:00 start: Wednesday is day 2


def weekly_peak(x: torch.Tensor, smooth: float | None = None) -> torch.Tensor:
    """Weekly peak [kW]: hard max, or smooth max ``τ·logsumexp(x/τ)`` with temperature τ = ``smooth`` kW."""
    if smooth is None:
        return x.amax(-1)
    return smooth * torch.logsumexp(x / smooth, dim=-1)


def wednesday_gap(x: torch.Tensor) -> torch.Tensor:
    """Mean Wednesday load minus mean weekly load [kW]."""
    return _wednesday(x).mean(-1) - x.mean(-1)


def wednesday_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean Wednesday load [kW]."""
    return _wednesday(x).mean(-1)


def mae_flatness(x: torch.Tensor) -> torch.Tensor:
    """L1 distance to the flat curve of the same energy, ``Σ_t |x_t − mean(x)|·Δt`` [kWh]."""
    return (x - x.mean(-1, keepdim=True)).abs().sum(-1) * _dt_h(x)


def weekly_energy(x: torch.Tensor) -> torch.Tensor:
    """Energy over the week [kWh]."""
    return x.sum(-1) * _dt_h(x)


@dataclasses.dataclass(frozen=True)
class Criterion:
    """A named criterion. ``fn`` reports (hard); ``train_fn`` drives tuning (defaults to ``fn``)."""

    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    unit: str
    direction: int  # +1 maximise, -1 minimise
    doc: str
    train_fn: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def train(self, x: torch.Tensor) -> torch.Tensor:
        """The criterion as BTGM maximises it: the surrogate, signed by direction."""
        return self.direction * (self.train_fn or self.fn)(x)


SMOOTH_PEAK_TAU_KW = 0.25

REGISTRY: dict[str, Criterion] = {
    c.name: c
    for c in (
        Criterion(
            "weekly-peak",
            weekly_peak,
            "kW",
            +1,
            "maximum of the weekly curve (smooth max τ=0.25 kW for training)",
            train_fn=lambda x: weekly_peak(x, smooth=SMOOTH_PEAK_TAU_KW),
        ),
        Criterion("wednesday-gap", wednesday_gap, "kW", +1, wednesday_gap.__doc__),
        Criterion("mae-flatness", mae_flatness, "kWh", +1, mae_flatness.__doc__),
        Criterion("mae-flatness-min", mae_flatness, "kWh", -1, "mae-flatness minimised: flat weeks (empty homes)"),
        Criterion("weekly-energy", weekly_energy, "kWh", +1, weekly_energy.__doc__),
        Criterion("wednesday-mean", wednesday_mean, "kW", +1, wednesday_mean.__doc__),
    )
}


ALLOW_ENV = "ENERGY_BTGM_CRITERIA_ALLOW"


def allowed_modules() -> list[str]:
    """The module prefixes a user criterion may be imported from: ``$ENERGY_BTGM_CRITERIA_ALLOW``, comma-separated.

    Set by whoever runs the command or the serve process, never by a flow parameter: a deployment can be
    run by anyone who reaches the Prefect API, and importing a module runs its code.
    """
    return [m.strip() for m in os.environ.get(ALLOW_ENV, "").split(",") if m.strip()]


def get(name: str) -> Criterion:
    """A registered criterion by name, or a user's function by import path ``package.module:function`` whose
    module is on the allow-list (``allowed_modules``). Nothing is evaluated from text; a path outside the
    list is refused before anything is imported."""
    if name in REGISTRY:
        return REGISTRY[name]
    if ":" in name:
        mod, _, attr = name.partition(":")
        if not (mod.replace(".", "").replace("_", "").isalnum() and attr.isidentifier()):
            raise KeyError(f"criterion {name!r} is not an import path package.module:function")
        allowed = allowed_modules()
        if not any(mod == a or mod.startswith(a + ".") for a in allowed):
            raise KeyError(
                f"criterion {name!r}: module {mod!r} is not on the allow-list ({', '.join(allowed) or 'empty'}); "
                f"add it to ${ALLOW_ENV} (comma-separated module prefixes) in the environment that runs the command"
            )
        try:
            fn = getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError) as e:
            raise KeyError(f"cannot import criterion {name!r}: {e}") from None
        if not callable(fn):
            raise KeyError(f"criterion {name!r} is not a function")
        return Criterion(
            name, fn, getattr(fn, "unit", "?"), getattr(fn, "direction", +1), (fn.__doc__ or name).strip().splitlines()[0]
        )
    raise KeyError(f"unknown criterion {name!r}; known: {', '.join(REGISTRY)}, or an import path package.module:function")


def check(c: Criterion, T: int = 336) -> None:
    """Reject a criterion that returns the wrong shape, NaN/inf or no gradient, saying which."""
    x = (torch.rand(4, T, dtype=torch.float64) * 3 + 0.2).requires_grad_(True)
    for label, fn in (("report", c.fn), ("training", lambda v: c.train(v))):
        y = fn(x)
        if not isinstance(y, torch.Tensor) or y.shape != (4,):
            raise ValueError(
                f"criterion {c.name!r} ({label}) must map curves (B, T) to (B,); "
                f"got shape {tuple(getattr(y, 'shape', ()))} for input (4, {T})"
            )
        if not torch.isfinite(y).all():
            raise ValueError(f"criterion {c.name!r} ({label}) returned NaN or inf on positive test curves")
    y = c.train(x).sum()
    g = torch.autograd.grad(y, x, allow_unused=True)[0] if y.requires_grad else None
    if g is None or not torch.isfinite(g).all() or g.abs().sum() == 0:
        raise ValueError(
            f"criterion {c.name!r} has no usable gradient with respect to the curve; "
            "BTGM needs a differentiable criterion (use a smooth surrogate for training)"
        )
