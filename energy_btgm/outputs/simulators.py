"""Exports of a scenario bank that load in grid simulators: PyPSA, OpenDSS, GridLAB-D and pandapower.

Every export lays the bank's weeks on the week starting ``week_start`` (a Monday, in the meters'
local time zone, which the bank records) at the bank's resolution. Each writes a folder, atomically:

- ``pypsa``: a PyPSA CSV folder (``import_from_csv_folder``): ``buses.csv`` (one bus, ``bank``),
  ``loads.csv`` (one load per scenario, ``s<id>``, on that bus), ``loads-p_set.csv`` (snapshots ×
  loads, **MW**) and ``snapshots.csv`` (tz-naive local wall times, with ``objective``,
  ``generators`` and ``stores`` weightings equal to the interval in hours). Move the loads to your
  buses with ``n.loads.bus = ...``.
- ``opendss``: ``loadshapes.dss`` with one ``Loadshape.s<id>`` per scenario (``npts``,
  ``minterval``, ``mult=(file=s<id>.csv)``, ``UseActual=yes``: the values are **kW**), and the CSV
  files it names (one value per line). ``Redirect loadshapes.dss``, then ``daily=s<id>`` on a load.
- ``gridlabd``: one player file per scenario, ``s<id>.player``, lines ``YYYY-MM-DD HH:MM:SS ZZZ,value``
  (absolute local timestamps with the zone's abbreviation, values in **kW**, e.g. for a ZIPload's
  ``base_power``).
- ``pandapower``: ``net.json``, the study's grid with ``ConstControl`` controllers on every load's
  ``p_mw`` and ``q_mvar`` (**MW**, **MVAr**), fed by a ``DFData`` whose index is the integer time step
  (the scenarios one after another, ``T`` steps each), with ``scenario_id`` and ``timestamp`` kept
  beside; the loads share each scenario's curve as in the grid study (by rated power, with the
  study's growth and power factor). ``pandapower.timeseries.run_timeseries(net)`` runs it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from energy_btgm import bank
from energy_btgm.errors import ParameterError
from energy_btgm.outputs.export import monday
from energy_btgm.store import atomic_dir

FORMATS = ("pypsa", "opendss", "gridlabd", "pandapower")


def week_times(week_start: str, T: int, step_min: int, tz: str) -> pd.DatetimeIndex:
    """The T local wall times of the week starting ``week_start`` (a Monday), tz-aware in ``tz`` where the
    zone is known; a week with a clock change is refused (the bank's weeks are on a nominal grid)."""
    start = monday(week_start)
    if start != start.normalize():
        raise ParameterError(f"--week-start must be a Monday at 00:00, got {week_start}")
    wall = pd.date_range(start, periods=T, freq=f"{step_min}min")
    if tz in ("", "unknown"):
        return wall
    try:
        local = wall.tz_localize(tz, nonexistent="raise", ambiguous="raise")
    except Exception:  # pytz/zoneinfo raise several kinds on a clock change
        raise ParameterError(
            f"the week of {week_start} has a clock change in {tz}; the bank's weeks are on a nominal "
            "7 × 24 h grid, so choose a --week-start without one"
        ) from None
    return local


def _ids(df: pd.DataFrame, n: int | None) -> tuple[np.ndarray, list[str]]:
    rows = np.arange(len(df) if n is None else min(n, len(df)))
    return rows, [f"s{int(i)}" for i in df["scenario_id"].to_numpy()[rows]]


def export_simulator(
    path: Path,
    out: Path,
    fmt: str,
    week_start: str = "2024-01-01",
    scenarios: int | None = None,
    grid: str | None = None,
    growth: float = 1.0,
    power_factor: float = 0.95,
) -> Path:
    """Write the bank at ``path`` for simulator ``fmt`` into the folder ``out``; return ``out``."""
    if fmt not in FORMATS:
        raise ParameterError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    df = bank.read(path)
    meta = df.attrs["meta"]
    X = df.attrs["load_kw"].astype(np.float64)  # (N, T) kW
    T = X.shape[1]
    step = int(meta["time_resolution_min"])
    times = week_times(week_start, T, step, meta.get("tz", "unknown"))
    rows, names = _ids(df, scenarios)
    X = X[rows]
    info = {
        "bank": str(path),
        "week_start": week_start,
        "tz": meta.get("tz"),
        "resolution_min": step,
        "scenarios": len(rows),
        "model_sha256": meta["model_sha256"],
        "format": fmt,
    }
    with atomic_dir(Path(out), overwrite=True) as d:
        if fmt == "pypsa":
            _pypsa(d, X, names, times, step)
        elif fmt == "opendss":
            _opendss(d, X, names, step)
        elif fmt == "gridlabd":
            _gridlabd(d, X, names, times)
        else:
            info.update(grid=grid, growth=growth, power_factor=power_factor)
            _pandapower(d, X, df["scenario_id"].to_numpy()[rows], times, grid, growth, power_factor)
        (d / "export.json").write_text(json.dumps(info, indent=1))
    return Path(out)


def _pypsa(d: Path, X: np.ndarray, names: list[str], times: pd.DatetimeIndex, step: int) -> None:
    """PyPSA's own CSV layout (what ``export_to_csv_folder`` writes): time series rows numbered like the
    snapshots, which ``snapshots.csv`` lists with their weightings."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        pypsa_version = version("pypsa")
    except PackageNotFoundError:
        pypsa_version = "1.2.4"  # the layout the tests load
    snapshots = times.tz_localize(None) if times.tz is not None else times  # PyPSA wants tz-naive snapshots
    pd.DataFrame({"name": ["energy-btgm bank"], "pypsa_version": [pypsa_version]}).to_csv(d / "network.csv", index=False)
    pd.DataFrame({"name": ["bank"], "v_nom": [0.4]}).to_csv(d / "buses.csv", index=False)
    pd.DataFrame({"name": names, "bus": "bank"}).to_csv(d / "loads.csv", index=False)
    pd.DataFrame(X.T * 1e-3, columns=names).to_csv(d / "loads-p_set.csv", float_format="%.7f")  # kW -> MW
    hours = step / 60
    pd.DataFrame(
        {"snapshot": snapshots.strftime("%Y-%m-%d %H:%M:%S"), "objective": hours, "stores": hours, "generators": hours}
    ).to_csv(d / "snapshots.csv")


def _opendss(d: Path, X: np.ndarray, names: list[str], step: int) -> None:
    lines = [f"! {len(names)} load shapes from an energy-btgm bank, in kW (UseActual=yes), {step}-minute steps"]
    for name, x in zip(names, X):
        (d / f"{name}.csv").write_text("\n".join(f"{v:.4f}" for v in x) + "\n")
        lines.append(f"New Loadshape.{name} npts={len(x)} minterval={step} mult=(file={name}.csv) UseActual=yes")
    (d / "loadshapes.dss").write_text("\n".join(lines) + "\n")


def _gridlabd(d: Path, X: np.ndarray, names: list[str], times: pd.DatetimeIndex) -> None:
    stamps = [t.strftime("%Y-%m-%d %H:%M:%S") + (f" {t.tzname()}" if t.tzinfo is not None else "") for t in times]
    for name, x in zip(names, X):
        (d / f"{name}.player").write_text("".join(f"{s},{v:.4f}\n" for s, v in zip(stamps, x)))


def _pandapower(
    d: Path, X: np.ndarray, ids: np.ndarray, times: pd.DatetimeIndex, grid: str | None, growth: float, pf: float
) -> None:
    import pandapower as pp
    import pandapower.control as control
    from pandapower.timeseries import DFData

    from energy_btgm.grid.network import GridConfig, allocation, injections, load_net, study_net

    if not grid:
        raise ParameterError("--format pandapower needs --grid (a SimBench code or a pandapower JSON file)")
    cfg = GridConfig(growth=growth, power_factor=pf)
    cfg.validate()
    net = study_net(load_net(grid), grid)
    S, T = X.shape
    p, q = injections(X, allocation(net), cfg)  # (S, T, L)
    cols_p = [f"p_mw_{i}" for i in range(len(net.load))]
    cols_q = [f"q_mvar_{i}" for i in range(len(net.load))]
    data = pd.DataFrame(np.concatenate([p.reshape(S * T, -1), q.reshape(S * T, -1)], 1), columns=cols_p + cols_q)
    data.insert(0, "scenario_id", np.repeat(ids, T))
    data.insert(1, "timestamp", np.tile(times.astype(str), S))
    source = DFData(data)
    loads = net.load.index.to_numpy()
    control.ConstControl(net, "load", "p_mw", element_index=loads, profile_name=cols_p, data_source=source)
    control.ConstControl(net, "load", "q_mvar", element_index=loads, profile_name=cols_q, data_source=source)
    pp.to_json(net, str(d / "net.json"))
