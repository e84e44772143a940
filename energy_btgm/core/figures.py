"""Figures as PNG bytes: drawn on ``matplotlib.figure.Figure`` objects, never through pyplot's global
state, so that nothing here switches the user's backend or leaks open figures."""

from __future__ import annotations

import base64
import io


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
