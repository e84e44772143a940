"""Saving and loading tensors without unpickling code: every ``.pt`` the project reads goes through ``load``,
every one it writes through ``save`` (serialised in memory, then written atomically, so that a full disk is
an ``OSError`` naming the path rather than torch's stream-writer error, and a killed run leaves no half file).

``torch.load(weights_only=True)`` restores tensors, state dicts and plain data (numbers, strings,
lists, dicts) and refuses anything else, so a file swapped in at a model's, flow's or checkpoint's
path cannot run code when it is read.
"""

from __future__ import annotations

import pickle
from pathlib import Path


def save(obj, path: Path) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically (``store.atomic_write_bytes``)."""
    import io

    import torch

    from energy_btgm.store import atomic_write_bytes

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(Path(path), buf.getvalue())


def load(path: Path, fix: str):
    """The tensors and plain data in ``path``; a file that holds anything else is refused, naming ``fix``."""
    import torch

    try:
        return torch.load(Path(path), weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        why = next((line for line in lines if line.startswith("WeightsUnpickler error")), lines[0] if lines else "")
        raise ValueError(
            f"{path} holds objects other than tensors and plain data, and is not loaded "
            f"(only weights are read, never code; {why.split(' Please use')[0][:200]}); {fix}"
        ) from None
