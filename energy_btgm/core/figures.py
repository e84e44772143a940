"""Figures as PNG bytes: drawn on ``matplotlib.figure.Figure`` objects, never through pyplot's global
state, so that nothing here switches the user's backend or leaks open figures."""

from __future__ import annotations

import base64
import io

import numpy as np


def new_figure(ncols: int = 1, figsize: tuple[float, float] = (8, 3.2), **subplot_kw):
    """A fresh ``Figure`` and its axes (one row of ``ncols``), independent of any pyplot backend."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(1, ncols, **subplot_kw)


def png_bytes(fig, dpi: int = 90) -> bytes:
    """The figure rendered as PNG (tight bounding box)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    """PNG bytes as a ``data:`` URI, for self-contained HTML."""
    return "data:image/png;base64," + base64.b64encode(png).decode()


def week_panels(titles: list[str], T: int, figsize: tuple[float, float] = (12, 3.2)):
    """Side-by-side panels of weekly curves (T points from Monday 00:00) sharing the kW axis, one per title:
    ``(fig, axes, hours)``, ``hours`` (T,) the x of every point."""
    hours = np.arange(T) * 168.0 / T
    fig, axes = new_figure(len(titles), figsize=figsize, sharey=True)
    for a, title in zip(axes, titles):
        a.set(title=title, xlabel="hour of week (Monday 00:00)", xticks=range(0, 169, 24))
    axes[0].set_ylabel("kW")
    return fig, axes, hours


def mean_band(ax, hours: np.ndarray, x: np.ndarray, curves: int = 5) -> None:
    """The mean ± std band of curves x (N, T) and the first ``curves`` of them, on ``ax``."""
    m, s = x.mean(0), x.std(0)  # (T,), (T,) over curves
    ax.fill_between(hours, m - s, m + s, alpha=0.25, label="mean ± std")
    ax.plot(hours, m, lw=1.2)
    for c in x[:curves]:
        ax.plot(hours, c, lw=0.5, alpha=0.7)
