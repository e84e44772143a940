"""The settings of a grid study (no heavy imports: the command line reads its defaults from here)."""

from __future__ import annotations

import dataclasses

from energy_btgm.errors import ParameterError
from energy_btgm.grid.network import GridConfig


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """A grid study: the grid, the limits that define the events, the demand growth and the budgets."""

    grid: str = "1-LV-rural2--0-sw"
    scenarios: int = 1000
    seconds: float = 60.0
    trafo_limit: float = 100.0
    v_min: float = 0.95
    v_max: float = 1.05
    growth: float = 1.0
    power_factor: float = 0.95
    max_homes_per_load: float = 4.0
    resolution_min: int = 0
    estimator: str = "auto"
    seed: int = 0

    def grid_config(self) -> GridConfig:
        return GridConfig(growth=self.growth, power_factor=self.power_factor, max_homes_per_load=self.max_homes_per_load)

    def validate(self) -> None:
        self.grid_config().validate()
        if self.scenarios < 1:
            raise ParameterError(f"--scenarios must be at least 1, got {self.scenarios}")
        if not self.seconds > 0:
            raise ParameterError(f"--seconds must be positive, got {self.seconds}")
        if not self.trafo_limit > 0:
            raise ParameterError(f"--trafo-limit is a loading in percent of the rating, got {self.trafo_limit}")
        if self.estimator not in ("auto", "bank", "proposal"):
            raise ParameterError(f"--estimator must be auto, bank or proposal, got {self.estimator!r}")
        if not 0 < self.v_min < self.v_max:
            raise ParameterError(f"the voltage band must satisfy 0 < --v-min < --v-max, got {self.v_min}-{self.v_max}")
