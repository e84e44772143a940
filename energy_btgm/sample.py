"""Generated curves as Parquet: the columns every scenario bank shares.

One row per curve: ``scenario_id``, ``load_kw`` (fixed-size list<float32>, T points from Monday
00:00), ``peak_kw``, ``energy_kwh``, ``sum_member_peaks_kw``, ``df``, ``admd_kw``, every card
criterion's value, and ``log_p`` (latent log-density under N(0, I)); file metadata records units,
resolution, the model and its checksum, the seed and the code version.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

import criteria
from energy_btgm.model import Generator
from energy_btgm.store import atomic_write_parquet, code_version, sha256_file


def curves_table(curves_kw: np.ndarray, sum_peaks_kw: np.ndarray, group_size: int, z: np.ndarray | None = None) -> pa.Table:
    """The common columns for curves (N, T) [kW] and their sums of member peaks (N,) [kW]."""
    N, T = curves_kw.shape
    peak = curves_kw.max(1)
    cols = {
        "scenario_id": np.arange(N, dtype=np.int64),
        "load_kw": pa.FixedSizeListArray.from_arrays(pa.array(curves_kw.astype(np.float32).ravel()), T),
        "peak_kw": peak.astype(np.float32),
        "energy_kwh": (curves_kw.sum(1) * 168.0 / T).astype(np.float32),
        "sum_member_peaks_kw": sum_peaks_kw.astype(np.float32),
        "df": (sum_peaks_kw / np.maximum(peak, 1e-6)).astype(np.float32),
        "admd_kw": (peak / group_size).astype(np.float32),
    }
    x = torch.as_tensor(curves_kw, dtype=torch.float32)
    for name, c in criteria.REGISTRY.items():  # every registered criterion (hard version), once per function
        if c.direction == 1:
            cols[name.replace("-", "_")] = c(x).numpy().astype(np.float32)
    if z is not None:
        cols["log_p"] = (-0.5 * (z ** 2).sum(1) - 0.5 * z.shape[1] * math.log(2 * math.pi)).astype(np.float64)
    return pa.table(cols)


def write_samples(gen: Generator, n: int, out: Path, seed: int = 0) -> Path:
    """Sample ``n`` curves from the model's prior and write them (atomically) to ``out``."""
    curves, peaks, z = gen.sample(n, seed=seed)
    table = curves_table(curves, peaks, gen.meta["group_size"], z)
    T = curves.shape[1]
    meta = {"units": json.dumps({"load_kw": "kW", "peak_kw": "kW", "energy_kwh": "kWh", "admd_kw": "kW",
                                 "sum_member_peaks_kw": "kW", "log_p": "nats"}),
            "time_resolution_min": str(int(round(10080 / T))), "week_convention": "Monday 00:00 local, interval start",
            "model": str(gen.path), "model_sha256": sha256_file(Path(gen.path) / "weights.pt"),
            "source": "p", "seed": str(seed), "code_version": code_version(),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **{k: v.encode() for k, v in meta.items()}})
    validate_bank(table)
    return atomic_write_parquet(Path(out), table)


def validate_bank(table: pa.Table) -> dict:
    """Run the ``bank-v1`` Great Expectations suite on a bank table; raise ValueError if it fails."""
    from energy_btgm.validation import BANK_SUITE, Validator

    T = table.schema.field("load_kw").type.list_size
    X = table.column("load_kw").combine_chunks().values.to_numpy(zero_copy_only=False).reshape(table.num_rows, T)
    cols = ["scenario_id", "peak_kw", "energy_kwh", "df", "admd_kw"] + [c for c in ("weight", "log_p", "log_q")
                                                                          if c in table.column_names]
    df = table.select(cols).to_pandas().assign(curve_finite=np.isfinite(X).all(1),
                                               peak_matches_curve=np.isclose(X.max(1), table.column("peak_kw").to_numpy(), rtol=1e-5))
    result = Validator.shared().validate(BANK_SUITE, df)
    if not result["success"]:
        failed = [e["expectation_config"]["type"] + " " + str(e["expectation_config"]["kwargs"].get("column", ""))
                  for e in result["results"] if not e["success"]]
        raise ValueError(f"the bank failed validation suite {BANK_SUITE}: {', '.join(failed)}; nothing was written")
    return result
