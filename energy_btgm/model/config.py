"""Training settings as a frozen dataclass: the one place their defaults live (the CLI and the Prefect
flows read them from here). Standard library only, so that ``energy-btgm --help`` stays fast."""

from __future__ import annotations

import dataclasses

from energy_btgm.errors import ParameterError


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    group_size: int = 10
    latent_dim: int = 16
    hidden: int = 128
    blocks: int = 10
    epochs: int = 60
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    kl_warmup_epochs: int = 15  # KL weight rises linearly from 0 to 1
    patience: int = 15  # early stopping on the validation ELBO
    power: float = 1.0  # features modelled as kW ** power (<1 makes appliance spikes less skewed)
    prior_transforms: int = 4  # coupling layers of a second-stage prior flow on the aggregate posterior; 0: none
    prior_steps: int = 3000  # its gradient steps (batch 512)
    heteroscedastic: bool = False  # observation variance per feature and latent
    peak_weight: float = 20.0  # the weekly peak observed w more times, as the peak of the decoder mean; 0: off
    seed: int = 0
    device: str = "auto"

    def validate(self) -> None:
        for name in ("group_size", "latent_dim", "hidden", "blocks", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ParameterError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.power <= 1:
            raise ParameterError(f"--power must be in (0, 1], got {self.power}")
        if self.peak_weight < 0:
            raise ParameterError(f"--peak-weight must be 0 (off) or more, got {self.peak_weight}")
        if self.prior_transforms < 0:
            raise ParameterError(f"--prior-transforms must be 0 or more, got {self.prior_transforms}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ParameterError(f"--device must be auto, cpu or cuda, got {self.device!r}")
