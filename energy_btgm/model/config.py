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
    prior_steps: int = 2000  # its gradient steps (batch 512)
    # the prior's fit sees each week's posterior with a std of at least h (a kernel bandwidth in latent units; 0: as
    # encoded), h the widest of these within one standard error of the best validation NLL; one value: that one
    prior_smoothing: tuple[float, ...] = (0.0, 0.25, 0.5)
    joint_prior: bool = False  # train the prior flow with the VAE (the KL to it) instead of fitting it afterwards
    heteroscedastic: bool = False  # observation variance per feature and latent
    stat_weight: float = 50.0  # every statistic (criteria and DF) observed w more times, as that of the decoder mean; 0: off
    statistics: str = "all"  # which: "all" (every registered criterion and the diversity factor) or names, comma-separated
    stat_sd_max: float = 0.25  # cap on each statistic's learned residual std, in that statistic's training stds; 0: none
    seed: int = 0
    device: str = "auto"

    def validate(self) -> None:
        for name in ("group_size", "latent_dim", "hidden", "blocks", "epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise ParameterError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.kl_warmup_epochs < 0:
            raise ParameterError(f"--kl-warmup-epochs must be 0 or more, got {self.kl_warmup_epochs}")
        if not 0 < self.power <= 1:
            raise ParameterError(f"--power must be in (0, 1], got {self.power}")
        if self.stat_weight < 0:
            raise ParameterError(f"--stat-weight must be 0 (off) or more, got {self.stat_weight}")
        if not 0 <= self.stat_sd_max <= 10:
            raise ParameterError(f"--stat-sd-max must be 0 (no cap) or a std up to 10, got {self.stat_sd_max}")
        self.statistic_names()
        if not self.prior_smoothing or not all(0 <= h <= 5 for h in self.prior_smoothing):
            raise ParameterError(f"--prior-smoothing takes one or more stds from 0 (none) to 5, got {self.prior_smoothing}")
        if self.prior_transforms < 0:
            raise ParameterError(f"--prior-transforms must be 0 or more, got {self.prior_transforms}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ParameterError(f"--device must be auto, cpu or cuda, got {self.device!r}")

    def statistic_names(self) -> tuple[str, ...]:
        """The statistics of the statistics term, checked against the registry (``model/statistics.py``)."""
        from energy_btgm.model import statistics

        known = statistics.names()
        if self.statistics == "all":
            return known
        chosen = tuple(s.strip() for s in self.statistics.split(",") if s.strip())
        unknown = [s for s in chosen if s not in known]
        if unknown or not chosen:
            raise ParameterError(
                f"--statistics {self.statistics!r}: {', '.join(unknown) or 'none given'} not among {', '.join(known)}; "
                "use 'all' or names from that list, comma-separated"
            )
        return chosen
