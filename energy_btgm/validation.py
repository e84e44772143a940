"""Great Expectations suites for canonical readings and weekly curves, validated chunk by chunk.

Suites are built in code, named with their version (``readings-v1``, ``curves-v1``) so that a
result file says which rules it checked. Each validation returns GE's result as a JSON-ready dict;
``Validator`` keeps one ephemeral context for a whole run (building one costs seconds).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pandas as pd

READINGS_SUITE = "readings-v1"
CURVES_SUITE = "curves-v1"
BANK_SUITE = "bank-v1"


def _readings_expectations(gx, max_kwh: float):
    E = gx.expectations
    return [
        E.ExpectTableColumnsToMatchOrderedList(
            column_list=[
                "meter_id",
                "timestamp",
                "kwh",
                "interval_min",
                "filled",
                "grid_offset_min",
                "step_remainder_min",
                "repeats_previous",
            ]
        ),
        E.ExpectColumnValuesToNotBeNull(column="meter_id"),
        E.ExpectColumnValuesToNotBeNull(column="timestamp"),
        E.ExpectColumnValuesToNotBeNull(column="kwh"),
        E.ExpectColumnValuesToBeOfType(column="kwh", type_="float32"),
        E.ExpectColumnValuesToBeBetween(column="kwh", min_value=0.0, max_value=max_kwh),
        # no duplicate (meter, timestamp): on rows sorted by (meter, timestamp), no row repeats its predecessor's key
        # (a vectorised check: GE's compound-uniqueness hashes every row and costs seconds per million)
        E.ExpectColumnValuesToBeInSet(column="repeats_previous", value_set=[False]),
        E.ExpectColumnValuesToBeInSet(column="interval_min", value_set=[15, 30, 60]),
        # regular interval per meter: every timestamp on the meter's grid, every step a whole number of intervals
        E.ExpectColumnValuesToBeInSet(column="grid_offset_min", value_set=[0]),
        E.ExpectColumnValuesToBeInSet(column="step_remainder_min", value_set=[0]),
    ]


def _curves_expectations(gx, T: int):
    E = gx.expectations
    return [
        E.ExpectColumnValuesToNotBeNull(column="week_start"),
        E.ExpectColumnValuesToBeBetween(column="df", min_value=1.0 - 1e-5),
        E.ExpectColumnValuesToBeBetween(column="admd_n_over_peak", min_value=1.0 - 1e-4, max_value=1.0 + 1e-4),
        E.ExpectColumnValuesToBeInSet(column="curve_len", value_set=[T]),
        E.ExpectColumnValuesToBeInSet(column="curve_finite", value_set=[True]),
        E.ExpectColumnValuesToBeBetween(column="energy_kwh", min_value=0.0),
    ]


def _bank_expectations(gx):
    E = gx.expectations
    return [
        E.ExpectColumnValuesToBeUnique(column="scenario_id"),
        E.ExpectColumnValuesToBeInSet(column="curve_finite", value_set=[True]),
        E.ExpectColumnValuesToBeInSet(column="peak_matches_curve", value_set=[True]),
        E.ExpectColumnValuesToNotBeNull(column="df"),
        E.ExpectColumnValuesToNotBeNull(column="energy_kwh"),
    ]


class Validator:
    """One ephemeral GE context; ``validate(name, df)`` runs the named suite on a DataFrame."""

    def __init__(self, max_kwh: float = 10.0, T: int = 336):
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.gx = gx
        self.max_kwh = max_kwh
        self._lock = threading.Lock()
        self.ctx = gx.get_context(mode="ephemeral")
        self.ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        source = self.ctx.data_sources.add_pandas("energy_btgm")
        self._batches = {}
        self._suites = {}
        for name, exps in (
            (READINGS_SUITE, _readings_expectations(gx, max_kwh)),
            (CURVES_SUITE, _curves_expectations(gx, T)),
            (BANK_SUITE, _bank_expectations(gx)),
        ):
            suite = gx.ExpectationSuite(name=name, meta={"version": int(name.rsplit("v", 1)[1])})
            for e in exps:
                suite.add_expectation(e)
            self._suites[name] = self.ctx.suites.add(suite)
            self._batches[name] = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")

    _shared = None

    @classmethod
    def shared(cls) -> Validator:
        """One validator per process for suites whose thresholds do not depend on the data (banks)."""
        if cls._shared is None:
            cls._shared = cls()
        return cls._shared

    def validate(self, suite: str, df: pd.DataFrame) -> dict:
        # one validation at a time per context: GE's context is not thread-safe, and tasks in threads
        # (Prefect's default runner) share the process's validator; concurrent runs mixed up their
        # dataframes ("Unalignable boolean Series") and failed every expectation
        with self._lock:
            batch = self._batches[suite].get_batch(batch_parameters={"dataframe": df})
            return batch.validate(self._suites[suite]).to_json_dict()


def readings_frame_for_suite(df: pd.DataFrame) -> pd.DataFrame:
    """Sort by (meter, timestamp) and add the derived columns the readings suite checks:
    grid offset and step remainder per meter [min], and whether a row repeats its predecessor's key."""
    df = df.sort_values(["meter_id", "timestamp"], kind="stable", ignore_index=True)
    t_ns = df["timestamp"].to_numpy("datetime64[ns]").astype(np.int64)
    t_min = t_ns // 60_000_000_000
    iv = df["interval_min"].to_numpy(np.int64)
    m = df["meter_id"].to_numpy()
    same = np.r_[False, m[1:] == m[:-1]]
    step = np.r_[0, np.diff(t_min)]
    repeats = same & np.r_[False, t_ns[1:] == t_ns[:-1]]
    return df.assign(grid_offset_min=t_min % iv, step_remainder_min=np.where(same, step % iv, 0), repeats_previous=repeats)


def summarise(results: list[dict]) -> dict:
    """Counts over chunk results, and the failing expectations with a sample of what they saw."""
    failed = []
    for r in results:
        for e in r["results"]:
            if not e["success"]:
                cfg = e["expectation_config"]
                failed.append(
                    {
                        "expectation": cfg["type"],
                        "kwargs": {k: v for k, v in cfg["kwargs"].items() if k != "batch_id"},
                        "observed": {
                            k: e["result"].get(k)
                            for k in ("unexpected_count", "partial_unexpected_list", "observed_value")
                            if k in e["result"]
                        },
                    }
                )
    return {
        "chunks": len(results),
        "success": all(r["success"] for r in results),
        "evaluated": sum(r["statistics"]["evaluated_expectations"] for r in results),
        "unsuccessful": sum(r["statistics"]["unsuccessful_expectations"] for r in results),
        "failed": failed[:20],
    }


def write_results(path: Path, suite: str, results: list[dict]) -> dict:
    from energy_btgm.store import atomic_write_text

    summary = summarise(results)
    atomic_write_text(path, json.dumps({"suite": suite, "summary": summary, "results": results}, indent=1, default=str))
    return summary
