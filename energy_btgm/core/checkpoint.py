"""Loading saved tensors without unpickling code: every ``.pt`` the project reads goes through ``load``.

``torch.load(weights_only=True)`` restores tensors, state dicts and plain data (numbers, strings,
lists, dicts) and refuses anything else, so a file swapped in at a model's, flow's or checkpoint's
path cannot run code when it is read.
"""

from __future__ import annotations

import pickle
from pathlib import Path


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
