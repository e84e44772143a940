"""The scenario bank: one schema, one writer, one reader, for banks of p (``sample``) and of a tuned q̂ (``tune``).

A bank is Parquet (zstd), one row per weekly scenario: ``scenario_id``, ``load_kw`` (fixed-size
list<float32>, T points from Monday 00:00 local, interval start), ``peak_kw``, ``energy_kwh``,
``sum_member_peaks_kw``, ``df``, ``admd_kw``, every registered maximised criterion (hard version,
``-`` written ``_``), ``log_p`` (latent log-density under N(0, I)); a tuned bank adds ``log_q``,
``weight`` (= p/q̂), ``source``, ``beta`` and ``run``. Tuned banks live under
``banks/criterion=<c>/group_size=<n>/run=<run>/part-0.parquet``.

The file metadata records the schema version (``schema_version``, checked by ``read``), the unit of
every numeric column (``units``, keyed by column name), the resolution, the week convention, the
meters' time zone (``tz``), what ``log_p``, ``log_q`` and ``weight`` mean (``semantics``), the model
and its checksum, the seed and the code version. ``write``
checks all of it and runs the ``bank-v1`` Great Expectations suite before an atomic write; ``read``
returns a DataFrame with the curves as an (N, T) array in ``.attrs["load_kw"]`` and the metadata in
``.attrs["meta"]``.

A base module: it imports ``criteria``, ``store`` and ``validation`` only.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import criteria
from energy_btgm.store import atomic_write_parquet, code_version

WEEK_CONVENTION = "Monday 00:00 local, interval start"
# the bank schema: 2 added the version itself, the meters' time zone and the weight semantics. ``read`` refuses others
SCHEMA_VERSION = "2"
REQUIRED_META = ("schema_version", "units", "time_resolution_min", "week_convention", "tz", "model_sha256", "code_version")
# what log_p, log_q and weight mean, written into every bank that has them
SEMANTICS = {
    "log_p": "log N(z; 0, I): the scenario's latent under the model's prior p (nats)",
    "log_q": "log q̂(z): the latent's density under the tuned flow that drew it (nats)",
    "weight": "p(z)/q̂(z), the importance weight: E_p[g(x)] = mean over the bank of weight·g(x); "
    "trust it only where the metadata's good_for says so (ESS, Pareto k̂)",
}
# the unit of every numeric column a bank may hold ("1": a pure number); criterion columns take their criterion's unit
UNITS = {
    "load_kw": "kW",
    "peak_kw": "kW",
    "energy_kwh": "kWh",
    "sum_member_peaks_kw": "kW",
    "df": "1",
    "admd_kw": "kW",
    "log_p": "nats",
    "log_q": "nats",
    "weight": "1 (p/q, importance weight)",
    "beta": "1 (per std of the criterion under p)",
}
NO_UNIT = ("scenario_id", "source", "run")


def column(criterion_name: str) -> str:
    """The bank column of a criterion (``weekly-peak`` -> ``weekly_peak``)."""
    return criterion_name.replace("-", "_")


def units_of(table: pa.Table) -> dict[str, str]:
    """The unit of each column of ``table`` (columns without a unit are left out)."""
    crit_units = {column(name): c.unit for name, c in criteria.REGISTRY.items()}
    out = {}
    for name in table.column_names:
        if name in NO_UNIT:
            continue
        unit = UNITS.get(name, crit_units.get(name))
        if unit is None:
            raise ValueError(f"bank column {name!r} has no unit; add it to energy_btgm.bank.UNITS")
        out[name] = unit
    return out


def curves_table(curves_kw: np.ndarray, sum_peaks_kw: np.ndarray, group_size: int, z: np.ndarray | None = None) -> pa.Table:
    """The common columns for curves (N, T) [kW], their sums of member peaks (N,) [kW] and latents (N, Z)."""
    import torch

    N, T = curves_kw.shape
    peak = curves_kw.max(1)  # (N,)
    cols = {
        "scenario_id": np.arange(N, dtype=np.int64),
        "load_kw": pa.FixedSizeListArray.from_arrays(pa.array(curves_kw.astype(np.float32).ravel()), T),
        "peak_kw": peak.astype(np.float32),
        "energy_kwh": (curves_kw.sum(1) * 168.0 / T).astype(np.float32),
        "sum_member_peaks_kw": sum_peaks_kw.astype(np.float32),
        "df": (sum_peaks_kw / np.maximum(peak, 1e-6)).astype(np.float32),
        "admd_kw": (peak / group_size).astype(np.float32),
    }
    x = torch.as_tensor(curves_kw, dtype=torch.float32)  # (N, T)
    for name, c in criteria.REGISTRY.items():  # every registered criterion (hard version), once per function
        if c.direction == 1:
            cols[column(name)] = c(x).numpy().astype(np.float32)
    if z is not None:  # log N(z; 0, I) per row: (N, Z) -> (N,)
        cols["log_p"] = (-0.5 * (z**2).sum(1) - 0.5 * z.shape[1] * math.log(2 * math.pi)).astype(np.float64)
    return pa.table(cols)


def write(table: pa.Table, dest: Path, *, model: Path, model_sha256: str, seed: int, tz: str, **meta: str) -> Path:
    """Add the bank metadata (schema version, units of every numeric column, resolution, week convention,
    the meters' time zone ``tz``, what the weight columns mean, provenance, and ``meta``), validate with
    the ``bank-v1`` suite, and write ``dest`` atomically."""
    T = table.schema.field("load_kw").type.list_size
    doc = {
        "schema_version": SCHEMA_VERSION,
        "units": json.dumps(units_of(table)),
        "time_resolution_min": str(int(round(10080 / T))),
        "week_convention": WEEK_CONVENTION,
        "tz": tz,
        "semantics": json.dumps({k: v for k, v in SEMANTICS.items() if k in table.column_names}, ensure_ascii=False),
        "model": str(model),
        "model_sha256": model_sha256,
        **meta,
        "code_version": code_version(),
        "seed": str(seed),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    check_finite(table, dest)
    table = table.replace_schema_metadata({k: str(v).encode() for k, v in doc.items()})
    validate(table)
    return atomic_write_parquet(Path(dest), table)


def check_finite(table: pa.Table, dest: Path) -> None:
    """Refuse a bank with NaN or inf in any numeric column (curves included), naming the column and rows."""
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        if pa.types.is_fixed_size_list(col.type):
            col = col.flatten()
            rows_of = table.schema.field(name).type.list_size
        else:
            rows_of = 1
        if not pa.types.is_floating(col.type):
            continue
        values = col.to_numpy(zero_copy_only=False)
        bad = np.flatnonzero(~np.isfinite(values)) // rows_of
        if len(bad):
            rows = np.unique(bad)
            raise ValueError(
                f"bank {dest}: column {name!r} is NaN or infinite in {len(rows)} of {table.num_rows} rows "
                f"(first: row {int(rows[0])}); nothing was written. The step that produced it diverged "
                "(for tuned banks: importance weights overflow when the flow strays far from p; tune with "
                "a smaller --top-fraction or more --steps)"
            )


def validate(table: pa.Table) -> dict:
    """Run the ``bank-v1`` Great Expectations suite on a bank table; raise ValueError if it fails."""
    from energy_btgm.validation import BANK_SUITE, Validator

    T = table.schema.field("load_kw").type.list_size
    X = table.column("load_kw").combine_chunks().values.to_numpy(zero_copy_only=False).reshape(table.num_rows, T)
    cols = ["scenario_id", "peak_kw", "energy_kwh", "df", "admd_kw"] + [
        c for c in ("weight", "log_p", "log_q") if c in table.column_names
    ]
    df = (
        table.select(cols)
        .to_pandas()
        .assign(
            curve_finite=np.isfinite(X).all(1),
            peak_matches_curve=np.isclose(X.max(1), table.column("peak_kw").to_numpy(), rtol=1e-5),
        )
    )
    result = Validator.shared().validate(BANK_SUITE, df)
    if not result["success"]:
        failed = [
            e["expectation_config"]["type"] + " " + str(e["expectation_config"]["kwargs"].get("column", ""))
            for e in result["results"]
            if not e["success"]
        ]
        raise ValueError(f"the bank failed validation suite {BANK_SUITE}: {', '.join(failed)}; nothing was written")
    return result


def _files(path: Path) -> list[Path]:
    path = Path(path)
    if path.is_file():
        return [path]
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else []
    if not files:
        raise FileNotFoundError(f"no bank at {path}; run `energy-btgm tune CRITERION` (or `energy-btgm sample`) first")
    return files


def read(path: Path, expect_model_sha256: str | None = None) -> pd.DataFrame:
    """Read a bank file or folder; check its metadata (and, if given, the model it came from)."""
    frames, meta0 = [], None
    for f in _files(path):
        try:
            t = pq.read_table(f)
        except (pa.ArrowInvalid, OSError) as e:
            raise ValueError(
                f"bank file {f} is corrupted or truncated ({str(e).splitlines()[0][:120]}); "
                "delete it and rerun the command that wrote it (energy-btgm tune / sample)"
            ) from None
        meta = {k.decode(): v.decode() for k, v in (t.schema.metadata or {}).items() if not k.startswith(b"ARROW")}
        if "units" in meta and meta.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(
                f"bank file {f} has schema version {meta.get('schema_version', '1 (before versions)')}; this "
                f"energy-btgm reads version {SCHEMA_VERSION}. Rewrite it with `energy-btgm tune` or `energy-btgm sample`"
            )
        missing = [k for k in REQUIRED_META if k not in meta]
        if missing:
            raise ValueError(
                f"bank file {f} lacks metadata {missing}; it was not written by energy-btgm - rewrite it "
                "with `energy-btgm tune` or `energy-btgm sample`"
            )
        if expect_model_sha256 and meta["model_sha256"] != expect_model_sha256:
            raise ValueError(
                f"bank file {f} was generated by another model version (weights {meta['model_sha256'][:12]}…, "
                f"expected {expect_model_sha256[:12]}…); rerun `energy-btgm tune` with the current model"
            )
        if meta0 is not None and meta["time_resolution_min"] != meta0["time_resolution_min"]:
            raise ValueError(f"bank files under {path} mix time resolutions; read them one at a time")
        meta0 = meta0 or meta
        curves = t.column("load_kw").combine_chunks()
        X = curves.values.to_numpy(zero_copy_only=False).reshape(len(t), curves.type.list_size)
        df = t.drop(["load_kw"]).to_pandas()
        frames.append((df, X))
    df = pd.concat([d for d, _ in frames], ignore_index=True)
    df.attrs["load_kw"] = np.concatenate([x for _, x in frames])
    df.attrs["meta"] = meta0
    return df
