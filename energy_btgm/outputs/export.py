"""Exports of a scenario bank for grid simulators: a timestamped table (long CSV, wide CSV, long Parquet).

Scenarios are weekly curves without a date of their own; ``export`` lays them on the week starting
``week_start`` (a Monday, local time) and writes (scenario_id, timestamp, load_kw) rows or one
column per scenario, in kW.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from energy_btgm import bank
from energy_btgm.errors import ParameterError
from energy_btgm.store import atomic_write_bytes, atomic_write_parquet

FORMATS = ("long-csv", "wide-csv", "long-parquet")


def monday(week_start: str) -> pd.Timestamp:
    """``--week-start`` as a timestamp, or a clear error if it is not a Monday."""
    start = pd.Timestamp(week_start)
    if start.day_of_week != 0:
        raise ParameterError(f"--week-start must be a Monday, got {week_start} ({start.day_name()})")
    return start


def export(path: Path, out: Path, fmt: str = "long-csv", week_start: str = "2024-01-01") -> Path:
    """Write the bank's curves as a timestamped table: long-csv, wide-csv or long-parquet.

    Scenarios are weekly curves without a date of their own; they are laid on the week starting
    ``week_start`` (a Monday, local time), each scenario on the same week.
    """
    if fmt not in FORMATS:
        raise ParameterError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    start = monday(week_start)
    df = bank.read(path)
    X = df.attrs["load_kw"]  # (N, T)
    N, T = X.shape
    step = int(df.attrs["meta"]["time_resolution_min"])
    times = pd.date_range(start, periods=T, freq=f"{step}min")
    ids = (
        df["scenario_id"].to_numpy()
        if "run" not in df
        else (df["run"].astype(str) + ":" + df["scenario_id"].astype(str)).to_numpy()
    )
    if fmt == "wide-csv":
        table = pd.DataFrame(X.T, index=times, columns=ids).rename_axis("timestamp")
        data = table.to_csv(float_format="%.4f").encode()
    else:
        long = pd.DataFrame(
            {"scenario_id": np.repeat(ids, T), "timestamp": np.tile(times, N), "load_kw": X.ravel().astype(np.float32)}
        )
        if fmt == "long-csv":
            data = long.to_csv(index=False, float_format="%.4f").encode()
        else:
            t = pa.Table.from_pandas(long, preserve_index=False)
            t = t.replace_schema_metadata(
                {
                    **{k: v.encode() for k, v in df.attrs["meta"].items()},
                    "export": json.dumps({"source": str(path), "week_start": week_start}).encode(),
                }
            )
            return atomic_write_parquet(Path(out), t)
    return atomic_write_bytes(Path(out), data)
