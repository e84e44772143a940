"""The low-voltage network of a grid study, and how a scenario's group curve is laid on its loads.

A grid is a SimBench code (``1-LV-rural2--0-sw``: 97 buses, 99 loads, one 250 kVA transformer) or a
pandapower JSON file. The study keeps its lines, transformers and loads, and leaves out static
generators and storage: it asks what demand does to the grid, and the weeks that load a transformer
most are winter evenings, when rooftop PV gives nothing.

**The rule that lays a scenario on the grid** (``allocation``): one scenario is the grid's whole
household demand for a week. A group of N homes is spread over the grid's loads in proportion to
their rated apparent power (``sn_mva``; ``p_mw`` where a load has no rating): load i draws
``share_i · growth · x(t)`` kW at every step t, with reactive power from one power factor. Why:
the bank's scenarios are group curves, already summed over N homes, and keep the diversity between
those homes; SimBench sizes each load by its connection, so a load rated for several homes takes
that many homes' share. A group of 100 on a grid of about 100 loads is one home per load; a grid
with fewer loads than ``N / max_homes_per_load`` is refused, and a group much smaller than the grid
is flagged (its curve would stand for too few homes). Every load follows the same shape, so the
study sees the feeders' total demand exactly and their internal diversity not at all: voltages at
the feeder ends are those of evenly spread homes.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from pathlib import Path

import numpy as np

from energy_btgm.errors import ParameterError

SIMBENCH_EXAMPLES = "1-LV-rural2--0-sw, 1-LV-semiurb4--0-sw, 1-LV-urban6--0-sw"


@dataclasses.dataclass(frozen=True)
class GridConfig:
    """How a scenario becomes loads: a demand growth factor (electrification), a power factor, and
    the most homes one load may stand for."""

    growth: float = 1.0
    power_factor: float = 0.95
    max_homes_per_load: float = 4.0

    def validate(self) -> None:
        if not (self.growth > 0 and math.isfinite(self.growth)):
            raise ParameterError(f"--growth must be a positive factor on demand, got {self.growth}")
        if not 0 < self.power_factor <= 1:
            raise ParameterError(f"--power-factor must lie in (0, 1], got {self.power_factor}")
        if not self.max_homes_per_load > 0:
            raise ParameterError(f"--max-homes-per-load must be positive, got {self.max_homes_per_load}")


def load_net(spec: str | Path):
    """A pandapower network from a SimBench code or a pandapower JSON file; a clear error otherwise."""
    import pandapower as pp

    path = Path(spec)
    if path.suffix.lower() == ".json" or path.exists():
        if not path.is_file():
            raise FileNotFoundError(
                f"grid file {path} not found; give a pandapower JSON file or a SimBench code ({SIMBENCH_EXAMPLES})"
            )
        try:
            return pp.from_json(str(path))
        except Exception as e:  # pandapower raises many kinds on a bad file
            raise ParameterError(
                f"grid file {path} is not a pandapower network ({type(e).__name__}: {str(e)[:120]}); "
                "write it with pandapower.to_json(net, path)"
            ) from None
    import simbench

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return simbench.get_simbench_net(str(spec))
    except Exception as e:  # simbench raises on an unknown code with several kinds of error
        raise ParameterError(
            f"--grid {spec!r} is neither a pandapower JSON file nor a SimBench code "
            f"({type(e).__name__}: {str(e)[:120]}); low-voltage examples: {SIMBENCH_EXAMPLES}"
        ) from None


def study_net(net, name: str = "grid"):
    """A copy of ``net`` for a demand study: static generators, storage and out-of-service loads left
    out, the loads renumbered 0..L-1 in their original order. Errors name what is missing."""
    net = copy.deepcopy(net)
    for table in ("sgen", "storage"):
        if table in net and len(net[table]):
            net[table] = net[table].iloc[0:0]
    if not len(net.ext_grid):
        raise ParameterError(f"grid {name} has no external grid (slack): add one with pandapower.create_ext_grid")
    net.load = net.load[net.load.in_service.astype(bool)].reset_index(drop=True)
    if not len(net.load):
        raise ParameterError(f"grid {name} has no load in service: nothing to lay the scenarios on")
    if not len(net.trafo) and not len(net.line):
        raise ParameterError(f"grid {name} has neither lines nor transformers: nothing to load")
    return net


def allocation(net) -> np.ndarray:
    """Each load's share (L,) of a scenario's demand: its rated apparent power over the total (``p_mw``
    where ``sn_mva`` is missing or zero). They sum to 1."""
    sn = net.load["sn_mva"].to_numpy(np.float64) if "sn_mva" in net.load else np.full(len(net.load), np.nan)
    p = net.load["p_mw"].to_numpy(np.float64)
    rating = np.where(np.isfinite(sn) & (sn > 0), sn, np.abs(p))
    if not (rating > 0).any():
        rating = np.ones(len(rating))  # no rating at all: share equally
    return rating / rating.sum()


def check_fit(n_loads: int, group_size: int, cfg: GridConfig, name: str = "grid") -> str | None:
    """Refuse a grid with too few loads for a scenario of ``group_size`` homes; a note when the group
    is much smaller than the grid (None otherwise)."""
    need = math.ceil(group_size / cfg.max_homes_per_load)
    if n_loads < need:
        raise ParameterError(
            f"grid {name} has {n_loads} loads; a scenario of {group_size} homes needs at least {need} "
            f"(at most {cfg.max_homes_per_load:g} homes per load). Use a larger grid, a bank of smaller "
            "groups, or raise --max-homes-per-load"
        )
    if group_size < 0.5 * n_loads:
        return (
            f"the bank's groups of {group_size} homes are spread over {n_loads} loads ({group_size / n_loads:.2f} "
            "homes per load): each scenario stands for fewer homes than the grid serves, so it under-loads "
            "the grid unless --growth says otherwise; a bank of larger groups fits this grid better"
        )
    return None


def injections(curves_kw: np.ndarray, share: np.ndarray, cfg: GridConfig) -> tuple[np.ndarray, np.ndarray]:
    """Loads' active and reactive power (S, T, L) in MW and MVAr for group curves (S, T) in kW."""
    p = curves_kw[:, :, None] * (cfg.growth * 1e-3) * share[None, None, :]  # (S, T, 1) * (1, 1, L) -> (S, T, L)
    return p, p * math.tan(math.acos(cfg.power_factor))
