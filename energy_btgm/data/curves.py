"""Household and group weekly curves with diversity factor, from the canonical readings.

Weekly curve: Monday 00:00 to Sunday end, local wall-clock time, at the data's resolution, in kW
(336 points half-hourly, 168 hourly). DST weeks are mapped to the nominal grid: the autumn hour
that occurs twice is averaged, the spring hour that does not exist is filled from its neighbours
(not counted as missing), and the week is flagged ``dst``.

A household-week with more than ``max_missing`` of its intervals missing or gap-filled is
excluded (and counted); its remaining holes are interpolated. Group curves are sums of ``n``
households drawn at random (``draws`` per week, seeded) among those complete that week, each with
the sum of member weekly peaks, ``df = Σ peaks / group peak`` and ``admd_kw = group peak / n``.
Weeks are split into train / validation / test at random (seeded), no week in two splits.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from energy_btgm import faults
from energy_btgm.data.config import CurvesConfig
from energy_btgm.store import atomic_dir, code_version, sha256_file, to_json

WEEK_NS = 7 * 86400 * 10**9
MONDAY0 = np.datetime64("1970-01-05", "ns").astype(np.int64)  # a Monday


def weekly_array(wall_ns: np.ndarray, codes: np.ndarray, n_meters: int, kw: np.ndarray, step_ns: int,
                 w0: int, n_weeks: int, flag: np.ndarray | None = None):
    """Average kW on the nominal wall-clock weekly grid, shape (M, W, T), NaN where no reading.

    ``wall_ns``: local wall-clock times [ns]; ``w0``: absolute index of the first week (weeks since
    1970-01-05). Also returns the count of readings per cell and, when ``flag`` is given, the count
    of flagged readings per (meter, week).
    """
    T = int(WEEK_NS // step_ns)
    wi = (wall_ns - MONDAY0) // WEEK_NS - w0
    si = ((wall_ns - MONDAY0) % WEEK_NS) // step_ns
    ok = (wi >= 0) & (wi < n_weeks)
    flat = (codes[ok].astype(np.int64) * n_weeks + wi[ok]) * T + si[ok]
    size = n_meters * n_weeks * T
    sums = np.bincount(flat, weights=kw[ok], minlength=size)
    counts = np.bincount(flat, minlength=size).reshape(n_meters, n_weeks, T)
    with np.errstate(invalid="ignore", divide="ignore"):
        arr = (sums.reshape(n_meters, n_weeks, T) / counts).astype(np.float32)
    flagged = None
    if flag is not None:
        flagged = np.bincount(flat // T, weights=flag[ok].astype(np.float64), minlength=n_meters * n_weeks).reshape(n_meters, n_weeks)
    return arr, counts, flagged


def _spring_slots(tz: str, w0: int, n_weeks: int, step_ns: int) -> np.ndarray:
    """Boolean (W, T): wall-clock slots that do not exist (spring DST change) in ``tz``."""
    T = int(WEEK_NS // step_ns)
    walls = MONDAY0 + (w0 + np.arange(n_weeks))[:, None] * WEEK_NS + np.arange(T)[None, :] * step_ns
    idx = pd.DatetimeIndex(walls.ravel().astype("datetime64[ns]"))
    return np.asarray(idx.tz_localize(tz, ambiguous=True, nonexistent="NaT").isna()).reshape(n_weeks, T)


def _interp_rows(x: np.ndarray) -> np.ndarray:
    """Fill NaN along the last axis linearly (edges: nearest value). x: (N, T)."""
    x = x.copy()
    T = x.shape[-1]
    for i in np.flatnonzero(np.isnan(x).any(1)):
        row, good = x[i], np.isfinite(x[i])
        if good.any():
            x[i] = np.interp(np.arange(T), np.flatnonzero(good), row[good])
    return x


def household_curves(store: Path, cfg: CurvesConfig, progress: bool = False) -> tuple[pd.DataFrame, dict]:
    """Household weekly curves from ``<store>/readings``, one bucket partition at a time."""
    from energy_btgm.data.ingest import read_manifest

    man = read_manifest(store)
    tz = man["config"]["tz"]
    intervals = {c["interval_min"] for c in man["coverage"]}
    if len(intervals) != 1:
        raise ValueError(f"readings mix intervals {sorted(intervals)} min; re-ingest with --resolution "
                         f"{max(intervals)}min so every meter has the same weekly grid")
    step_ns = intervals.pop() * 60 * 10**9
    first, last = (pd.Timestamp(x).tz_localize(None) for x in man["date_range"])
    w0 = int((first.value - MONDAY0) // WEEK_NS)
    n_weeks = int((last.value - MONDAY0) // WEEK_NS) - w0 + 1
    T = int(WEEK_NS // step_ns)
    spring = _spring_slots(tz, w0, n_weeks, step_ns)  # (W, T)
    dataset = pads.dataset(Path(store) / "readings", format="parquet", partitioning="hive")
    parts = sorted({f.split("bucket=")[1].split("/")[0] for f in dataset.files})
    if progress:
        from tqdm import tqdm

        parts = tqdm(parts, desc="curves: households", unit=" bucket")
    frames, excluded, kept = [], 0, 0
    for b in parts:
        faults.point(f"curves bucket {b}")
        table = dataset.to_table(filter=pads.field("bucket") == int(b) if b.isdigit() else pads.field("bucket") == b,
                                 columns=["meter_id", "timestamp", "kwh", "filled"])
        df = table.to_pandas()
        codes, meters = pd.factorize(df["meter_id"], sort=True)
        wall = df["timestamp"].dt.tz_convert(tz).dt.tz_localize(None).to_numpy("datetime64[ns]").astype(np.int64)
        kw = df["kwh"].to_numpy(np.float64) / (step_ns / 3.6e12)
        arr, counts, filled = weekly_array(wall, codes, len(meters), kw, step_ns, w0, n_weeks, df["filled"].to_numpy())
        missing = (counts == 0) & ~spring[None]  # (M, W, T)
        bad_share = (missing.sum(2) + filled) / T  # (M, W)
        has_data = counts.sum(2) > 0
        ok = has_data & (bad_share <= cfg.max_missing)
        excluded += int((has_data & ~ok).sum())
        m_idx, w_idx = np.nonzero(ok)
        kept += len(m_idx)
        curves = _interp_rows(arr[m_idx, w_idx])  # (N, T)
        dst = spring.any(1)[w_idx] | (counts[m_idx, w_idx] > 1).any(1)
        frames.append(pd.DataFrame({
            "meter_id": np.asarray(meters)[m_idx].astype(str),
            "week_start": pd.DatetimeIndex((MONDAY0 + (w0 + w_idx) * WEEK_NS).astype("datetime64[ns]")),
            "curve": list(curves), "peak_kw": curves.max(1), "energy_kwh": curves.sum(1) * step_ns / 3.6e12,
            "missing_or_filled_share": bad_share[m_idx, w_idx].astype(np.float32), "dst": dst}))
    hh = pd.concat(frames, ignore_index=True).sort_values(["week_start", "meter_id"], ignore_index=True)
    info = {"tz": tz, "interval_min": int(step_ns // 60e9), "points_per_week": T, "household_weeks_kept": kept,
            "household_weeks_excluded": excluded, "readings_manifest_sources": man["sources"]}
    return hh, info


def group_curves(hh: pd.DataFrame, n: int, cfg: CurvesConfig, rng: np.random.Generator,
                 weekly_temp: pd.Series | None = None) -> pd.DataFrame:
    """``cfg.draws`` random groups of ``n`` complete households per week, with DF and ADMD."""
    rows = []
    for week, block in hh.groupby("week_start", sort=True):
        if len(block) < n:
            continue
        X = np.stack(block["curve"].to_numpy())  # (H, T) kW
        peaks = block["peak_kw"].to_numpy()
        ids = block["meter_id"].to_numpy()
        members = np.stack([rng.choice(len(block), n, replace=False) for _ in range(cfg.draws)])  # (R, n)
        G = X[members].sum(1)  # (R, T) group curves
        gpeak = G.max(1)
        spk = peaks[members].sum(1)
        rows.append(pd.DataFrame({
            "week_start": week, "group_size": n, "draw": np.arange(cfg.draws),
            "members": [list(ids[m]) for m in members], "curve": list(G.astype(np.float32)),
            "sum_member_peaks_kw": spk.astype(np.float32), "peak_kw": gpeak.astype(np.float32),
            "df": (spk / gpeak).astype(np.float32), "admd_kw": (gpeak / n).astype(np.float32),
            "energy_kwh": (G.sum(1) * 168.0 / G.shape[1]).astype(np.float32),
            "temp_c": np.float32(weekly_temp.get(week, np.nan)) if weekly_temp is not None else np.float32(np.nan)}))
    if not rows:
        raise ValueError(f"no week has {n} complete households (most: {hh.groupby('week_start').size().max()}); "
                         f"lower --group-sizes or ingest more households")
    return pd.concat(rows, ignore_index=True)


def split_weeks(hh: pd.DataFrame, cfg: CurvesConfig) -> dict:
    """Week -> train / validation / test, stratified by the week's mean household energy.

    Weeks sorted by energy are cut into blocks of about 1 / (smallest held-out share) weeks (7 for
    70/15/15); within each block a seeded shuffle gives the validation and test weeks, the rest
    train. Held-out weeks so span the seasons instead of landing by chance in one of them.
    """
    energy = hh.groupby("week_start")["energy_kwh"].mean().sort_values(kind="stable")
    weeks = energy.index.to_numpy()
    rng = np.random.default_rng([cfg.seed, 0])
    _, val_share, test_share = cfg.split
    block = max(2, int(round(1 / max(min(val_share, test_share), 1e-9))))
    n_val, n_test = int(round(val_share * block)), int(round(test_share * block))
    split_of = {}
    for b0 in range(0, len(weeks), block):
        chunk = weeks[b0:b0 + block]
        if len(chunk) < block and b0 > 0:  # the remainder trains
            split_of.update({w: "train" for w in chunk})
            continue
        order = rng.permutation(len(chunk))
        for rank, j in enumerate(order):
            split_of[chunk[j]] = "validation" if rank < n_val else "test" if rank < n_val + n_test else "train"
    return split_of


def _table(df: pd.DataFrame, T: int) -> pa.Table:
    """Arrow table with the curve as fixed-size list<float32>."""
    curve = pa.FixedSizeListArray.from_arrays(pa.array(np.concatenate(df["curve"].to_numpy()).astype(np.float32)), T)
    t = pa.Table.from_pandas(df.drop(columns=["curve"]), preserve_index=False)
    return t.append_column("curve", curve)


def _weekly_temperature(path: Path | None) -> pd.Series | None:
    if path is None or not Path(path).exists():
        return None
    wt = pd.read_parquet(path)
    d = pd.to_datetime(wt["date"])
    week = d - pd.to_timedelta(d.dt.day_of_week, unit="D")
    return wt.groupby(week.to_numpy())["temp_c"].mean()


def build(store: Path, cfg: CurvesConfig, weather: Path | None = None, reports: Path = Path("reports"),
          progress: bool = False, validate: bool = True) -> dict:
    """Write ``<store>/curves/`` (households, groups per size, manifest); return the manifest."""
    cfg.validate()
    t0 = time.perf_counter()
    store = Path(store)
    if weather is None:
        default = store / "raw" / "synthetic" / "weather.parquet"
        weather = default if default.exists() else None
    hh, info = household_curves(store, cfg, progress)
    T = info["points_per_week"]
    split_of = split_weeks(hh, cfg)
    temp = _weekly_temperature(weather)
    groups = {}
    validator = None
    results = []
    if validate:
        from energy_btgm.validation import CURVES_SUITE, Validator

        validator = Validator(T=T)
    with atomic_dir(store / "curves", overwrite=True) as out:
        pq.write_table(_table(hh.assign(split=hh["week_start"].map(split_of)), T), out / "households.parquet", compression="zstd")
        for n in cfg.group_sizes:
            faults.point(f"curves groups-n{n}")
            g = group_curves(hh, n, cfg, np.random.default_rng([cfg.seed, n]), temp)
            g["split"] = g["week_start"].map(split_of)
            if validator is not None:
                C = np.stack(g["curve"].to_numpy())
                check = g[["week_start", "df", "energy_kwh"]].assign(
                    admd_n_over_peak=g["admd_kw"] * n / g["peak_kw"], curve_len=C.shape[1],
                    curve_finite=np.isfinite(C).all(1))
                results.append(validator.validate(CURVES_SUITE, check))
            pq.write_table(_table(g, T), out / f"groups-n{n}.parquet", compression="zstd")
            groups[str(n)] = {"rows": len(g), "file": f"groups-n{n}.parquet", "weeks": int(g["week_start"].nunique()),
                              "df_p50": float(g["df"].median()), "admd_kw_p50": float(g["admd_kw"].median()),
                              "peak_kw_p50": float(g["peak_kw"].median()), "peak_kw_p99": float(g["peak_kw"].quantile(0.99)),
                              "rows_by_split": g["split"].value_counts().to_dict()}
        validation = None
        if validator is not None:
            from energy_btgm.validation import CURVES_SUITE, write_results

            vpath = Path(reports) / "validation" / "curves.json"
            validation = write_results(vpath, CURVES_SUITE, results)
            validation["result_file"] = str(vpath)
            if not validation["success"]:
                raise ValueError(f"the curves failed validation suite {CURVES_SUITE}; see {vpath}")
        manifest = {
            "produced_by": f"energy-btgm {code_version()} curves",
            "config": dataclasses.asdict(cfg), **info,
            "readings_manifest_sha256": sha256_file(store / "readings" / "_manifest.json"),
            "weather": str(weather) if weather else None,
            "households_rows": len(hh), "groups": groups,
            "split": {s: sorted(str(pd.Timestamp(w).date()) for w, v in split_of.items() if v == s)
                      for s in ("train", "validation", "test")},
            "validation": validation, "seconds": round(time.perf_counter() - t0, 2),
        }
        faults.point("curves manifest")
        (out / "_manifest.json").write_text(to_json(manifest, "the curves manifest", indent=1))
    return manifest


def read_groups(store: Path, n: int, split: str | None = None, curves_dir: Path | None = None) -> pd.DataFrame:
    """Group curves of size ``n`` (optionally one split) from ``<store>/curves`` (or ``curves_dir``);
    the curve column comes as an (N, T) array in ``.attrs["curves_kw"]``."""
    path = Path(curves_dir or Path(store) / "curves") / f"groups-n{n}.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; run `energy-btgm curves --group-sizes {n}`")
    t = pq.read_table(path)
    if split:
        t = t.filter(pa.compute.equal(t.column("split"), split))
    curves = t.column("curve").combine_chunks()
    X = curves.values.to_numpy().reshape(len(t), curves.type.list_size)
    df = t.drop(["curve"]).to_pandas()
    df.attrs["curves_kw"] = X
    return df
