"""Ingest meter files into the canonical readings dataset, with quarantine and a manifest.

Two passes in bounded memory:

1. stream each source in blocks (``readers.read_raw``), parse timestamps and values with pyarrow
   compute, and spill rows to K hash buckets by meter id (Arrow IPC files in a temp folder);
2. per bucket (all rows of a subset of meters): localise wall-clock times (ambiguous autumn hour:
   first occurrence = summer time; nonexistent spring times shifted forward; both counted), drop
   exact duplicates, quarantine conflicting ones, convert units to kWh, detect each meter's
   interval and any change of it, quarantine missing / negative / implausible values, fill gaps up
   to ``max_gap_h`` linearly (flagged), validate with the ``readings-v1`` suite, write
   ``readings/bucket=NNN/part-0.parquet``.

Every input row is either kept or written to the quarantine file with a reason code, so
``rows_in == rows_kept + rows_quarantined`` (exact duplicates are quarantined too, reason
``exact_duplicate``). Canonical readings: ``meter_id``, ``timestamp`` (tz-aware, the meters' zone,
interval start), ``kwh`` (float32), ``interval_min``, ``filled``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from energy_btgm.errors import ParameterError
from energy_btgm.data.readers import InputError, bucket_of, check_file, read_raw
from energy_btgm.data.config import RESOLUTIONS_MIN, IngestConfig
from energy_btgm.store import atomic_dir, atomic_write_parquet, atomic_write_text, code_version, replace_dir, sha256_file

NS_MIN = 60_000_000_000
BUCKET_ROWS = 2_000_000  # target rows per bucket (bounds memory of pass 2)
MISSING_MARKERS = ["", "Null", "NULL", "null", "NA", "NaN", "nan", "N/A"]
QUARANTINE_SCHEMA = pa.schema([("source_file", pa.string()), ("line", pa.int64()), ("meter_id", pa.string()),
                               ("timestamp_raw", pa.string()), ("value_raw", pa.string()), ("reason", pa.string())])


# --- pass 1: parse and spill -------------------------------------------------------------------

def _parse_ts(ts: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(wall ns or NaT-int, utc ns or NaT-int, ok) from strings or timestamps. int64 min = missing."""
    n = len(ts)
    nat = np.iinfo(np.int64).min
    wall = np.full(n, nat, np.int64)
    utc = np.full(n, nat, np.int64)
    if pa.types.is_timestamp(ts.type):
        v = pc.cast(ts, pa.timestamp("ns", tz=ts.type.tz)).cast(pa.int64()).to_numpy(zero_copy_only=False)
        ok = ~pc.is_null(ts).to_numpy(zero_copy_only=False)
        (utc if ts.type.tz else wall)[ok] = v[ok]
        return wall, utc, ok
    s = pc.utf8_trim_whitespace(ts)
    head = pc.replace_substring(pc.utf8_slice_codeunits(s, 0, 19), "T", " ")
    fast = pc.strptime(head, format="%Y-%m-%d %H:%M:%S", unit="ns", error_is_null=True)
    tail = pc.utf8_slice_codeunits(s, -6)  # literal tests on the tail: cheaper than a regex on every row
    has_offset = (pc.ends_with(s, "Z").to_numpy(zero_copy_only=False)
                  | pc.match_substring(tail, "+").to_numpy(zero_copy_only=False)
                  | pc.match_substring(pc.utf8_slice_codeunits(tail, 0, 3), "-").to_numpy(zero_copy_only=False))
    ok = ~pc.is_null(fast).to_numpy(zero_copy_only=False)
    fv = fast.cast(pa.int64()).to_numpy(zero_copy_only=False)
    plain = ok & ~has_offset
    wall[plain] = fv[plain]
    slow = np.flatnonzero(has_offset | ~ok)
    if len(slow):  # offsets, dates without time, other formats: pandas, on the few rows that need it
        raw = pd.Series(s.take(pa.array(slow)).to_pylist(), dtype=object)
        aware = raw.str.contains(r"(?:Z|[+-]\d\d:?\d\d)$", regex=True, na=False).to_numpy()
        if aware.any():
            t = pd.to_datetime(raw[aware], utc=True, errors="coerce", format="ISO8601")
            good = t.notna().to_numpy()
            idx = slow[aware][good]
            utc[idx] = t[good].to_numpy("datetime64[ns]").astype(np.int64)
            ok[idx] = True
        if (~aware).any():
            t = pd.to_datetime(raw[~aware], errors="coerce", format="mixed")
            good = t.notna().to_numpy()
            idx = slow[~aware][good]
            wall[idx] = t[good].to_numpy("datetime64[ns]").astype(np.int64)
            ok[idx] = True
    return wall, utc, ok


def _parse_values(value: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values with NaN for missing, non_numeric mask)."""
    if pa.types.is_floating(value.type) or pa.types.is_integer(value.type):
        v = pc.cast(value, pa.float64()).to_numpy(zero_copy_only=False)
        return np.where(pc.is_null(value).to_numpy(zero_copy_only=False), np.nan, v), np.zeros(len(v), bool)
    s = pc.utf8_trim_whitespace(value)
    missing_arr = pc.or_(pc.is_in(s, value_set=pa.array(MISSING_MARKERS)), pc.is_null(s))
    missing = missing_arr.to_numpy(zero_copy_only=False)
    try:  # fast path: every non-missing value is a number
        num = pc.cast(pc.if_else(missing_arr, pa.scalar(None, pa.string()), s), pa.float64())
        return num.to_numpy(zero_copy_only=False).astype(np.float64), np.zeros(len(missing), bool)
    except pa.ArrowInvalid:  # some text in the column: find it row by row
        num = pd.to_numeric(pd.Series(s.to_numpy(zero_copy_only=False), dtype=object).where(~missing, None),
                            errors="coerce").to_numpy(np.float64)
        return num, np.isnan(num) & ~missing


class _Quarantine:
    """Collects rejected rows (as Arrow batches) and counts reasons."""

    def __init__(self):
        self.batches: list[pa.Table] = []
        self.counts: Counter = Counter()

    def add(self, source, line, meter, ts_raw, value_raw, reason) -> None:
        n = len(line)
        if not n:
            return
        reason = np.broadcast_to(np.asarray(reason, dtype=object), (n,))
        self.counts.update(r.split(" ")[0].split(":")[0] for r in reason)
        self.batches.append(pa.table({
            "source_file": pa.array(np.broadcast_to(np.asarray(source, dtype=object), (n,)), pa.string()),
            "line": pa.array(np.asarray(line, np.int64)), "meter_id": pa.array(np.asarray(meter, dtype=object), pa.string()),
            "timestamp_raw": pa.array([None if x is None else str(x) for x in ts_raw], pa.string()),
            "value_raw": pa.array([None if x is None or (isinstance(x, float) and math.isnan(x)) else str(x) for x in value_raw], pa.string()),
            "reason": pa.array(reason, pa.string())}, schema=QUARANTINE_SCHEMA))

    def table(self) -> pa.Table:
        return pa.concat_tables(self.batches) if self.batches else QUARANTINE_SCHEMA.empty_table()


SPILL_SCHEMA = pa.schema([("meter_id", pa.string()), ("wall", pa.int64()), ("utc", pa.int64()), ("value", pa.float64()),
                          ("line", pa.int64()), ("src", pa.int32())])


def _spill(sources: list[Path], cfg: IngestConfig, tmp: Path, k: int, quarantine: _Quarantine, progress) -> int:
    """Pass 1. Returns the number of data rows read."""
    writers = {}
    rows_in = 0
    try:
        for si, src in enumerate(sources):
            for table, invalid in read_raw(src, cfg.fmt, meter_col=cfg.meter_col, time_col=cfg.time_col,
                                           value_col=cfg.value_col, delimiter=cfg.delimiter):
                if invalid:
                    rows_in += len(invalid)
                    lines, texts, reasons = zip(*invalid)
                    quarantine.add(str(src), [x or -1 for x in lines], [None] * len(lines), texts, [None] * len(lines), reasons)
                n = table.num_rows
                if not n:
                    continue
                rows_in += n
                lines = table.column("line").to_numpy()
                meter = table.column("meter_id").combine_chunks()
                wall, utc, ts_ok = _parse_ts(table.column("ts").combine_chunks())
                value, non_numeric = _parse_values(table.column("value").combine_chunks())
                empty_meter = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(meter)), 0).to_numpy(zero_copy_only=False)
                bad = ~ts_ok | non_numeric | empty_meter
                if bad.any():
                    idx = np.flatnonzero(bad)
                    reason = np.where(empty_meter[idx], "missing_meter_id",
                                      np.where(~ts_ok[idx], "bad_timestamp", "non_numeric_value"))
                    take = pa.array(idx)
                    quarantine.add(str(src), lines[idx], meter.take(take).to_pylist(), table.column("ts").take(take).to_pylist(),
                                   table.column("value").take(take).to_pylist(), reason)
                    keep = np.flatnonzero(~bad)
                    meter, wall, utc, value, lines = meter.take(pa.array(keep)), wall[keep], utc[keep], value[keep], lines[keep]
                nat = np.iinfo(np.int64).min
                spill = pa.table({"meter_id": meter, "wall": pa.array(wall, mask=wall == nat), "utc": pa.array(utc, mask=utc == nat),
                                  "value": pa.array(value), "line": pa.array(lines),
                                  "src": pa.array(np.full(len(lines), si, np.int32))}, schema=SPILL_SCHEMA)
                buckets = bucket_of(spill.column("meter_id").combine_chunks(), k)
                for b in np.unique(buckets):
                    part = spill.filter(pa.array(buckets == b))
                    if b not in writers:
                        writers[b] = ipc.new_file(str(tmp / f"bucket-{b:04d}.arrow"), SPILL_SCHEMA)
                    writers[b].write_table(part)
                if progress is not None:
                    progress.update(n)
    finally:
        for w in writers.values():
            w.close()
    return rows_in


# --- pass 2: clean one bucket ------------------------------------------------------------------

def _localise(meter: np.ndarray, wall: np.ndarray, utc: np.ndarray, order_key: np.ndarray, tz: str,
              counts: Counter) -> np.ndarray:
    """UTC ns for every row: given, or wall clock localised in ``tz`` (ambiguous/nonexistent resolved).

    ``wall``/``utc`` are int64 ns with int64-min for missing; ``order_key`` orders rows as in the files.
    """
    nat = np.iinfo(np.int64).min
    need = utc == nat
    out = utc.copy()
    if not need.any():
        return out
    w = pd.DatetimeIndex(wall[need].astype("datetime64[ns]"))
    loc = w.tz_localize(tz, ambiguous="NaT", nonexistent="NaT").asi8.copy()
    bad = loc == nat
    if bad.any():
        wb = w[bad]
        nonexistent = np.asarray(wb.tz_localize(tz, ambiguous=True, nonexistent="NaT").isna())
        # ambiguous autumn hour: the first occurrence (file order) is summer time, the second winter time
        sub = pd.DataFrame({"m": meter[need][bad], "w": wb.asi8, "o": order_key[need][bad]})
        rank = sub.sort_values("o").groupby(["m", "w"]).cumcount().reindex(sub.index).to_numpy()
        resolved = wb.tz_localize(tz, ambiguous=(rank == 0) | nonexistent, nonexistent="shift_forward")
        loc[bad] = resolved.asi8
        counts["dst_ambiguous_resolved"] += int((~nonexistent).sum())
        counts["dst_nonexistent_shifted"] += int(nonexistent.sum())
    out[need] = loc
    return out


def _clean_bucket(df: pd.DataFrame, cfg: IngestConfig, sources: list[str], quarantine: _Quarantine,
                  counts: Counter) -> tuple[pd.DataFrame, list[dict]]:
    """Pass 2 on all rows of a set of meters. Returns (canonical readings, per-meter coverage)."""
    src_names = np.asarray(sources, dtype=object)

    def reject(idx, reason):
        """Quarantine rows of the current ``df`` at positions ``idx`` (or where a full-length mask is true)."""
        idx = np.flatnonzero(idx) if idx.dtype == bool else idx
        if len(idx):
            sub = df.iloc[idx]
            ts = pd.DatetimeIndex(sub["t"].to_numpy().astype("datetime64[ns]"), tz="UTC").tz_convert(cfg.tz).astype(str)
            quarantine.add(src_names[sub["src"].to_numpy()], sub["line"].to_numpy(), sub["meter_id"].to_numpy(),
                           list(ts), list(sub["value"].to_numpy()), reason)

    nat = np.iinfo(np.int64).min
    order_key = df["src"].to_numpy(np.int64) * (1 << 40) + df["line"].to_numpy(np.int64)
    codes, _ = pd.factorize(df["meter_id"])
    df["t"] = _localise(codes, df["wall"].to_numpy(np.int64, na_value=nat), df["utc"].to_numpy(np.int64, na_value=nat),
                        order_key, cfg.source_tz or cfg.tz, counts)
    df = df.drop(columns=["wall", "utc"])
    order = np.lexsort((order_key, df["t"].to_numpy(), codes))
    df = df.iloc[order].reset_index(drop=True)
    codes = codes[order]
    t = df["t"].to_numpy()
    v = df["value"].to_numpy()

    # duplicates on (meter, instant): identical values -> keep the first; differing -> quarantine all
    same_key_prev = np.r_[False, (codes[1:] == codes[:-1]) & (t[1:] == t[:-1])]
    key_id = np.cumsum(~same_key_prev)
    vkey = np.where(np.isnan(v), -1e300, v)
    differs = same_key_prev & np.r_[False, vkey[1:] != vkey[:-1]]
    conflicting = np.isin(key_id, key_id[differs]) if differs.any() else np.zeros(len(v), bool)
    exact_dup = same_key_prev & ~conflicting
    reject(conflicting, "conflicting_duplicate")
    reject(exact_dup, "exact_duplicate")
    keep = ~(conflicting | exact_dup)
    df = df[keep].reset_index(drop=True)

    # interval per meter (mode of steps), and changes of interval
    target = RESOLUTIONS_MIN.get(cfg.resolution)
    out_frames, coverage = [], []
    for m, g in df.groupby("meter_id", sort=True):
        tm = g["t"].to_numpy()
        steps = np.diff(tm) // NS_MIN
        candidates = [15, 30, 60]
        freq = [(int((steps == c).sum()), c) for c in candidates]
        native = max(freq)[1] if len(steps) else (target or 30)
        # a stretch where the local step differs from the native one: a change of interval
        off_grid = (tm // NS_MIN) % native != 0
        changed = off_grid
        if np.isin(steps, [c for c in candidates if c != native]).mean() > 0.01 if len(steps) else False:
            local = pd.Series(np.r_[steps, steps[-1:]]).rolling(9, center=True, min_periods=1).median().to_numpy()
            changed = (np.isin(local, candidates) & (local != native)) | off_grid
        if changed.sum() > 1:
            lo, hi = np.flatnonzero(changed)[[0, -1]]
            span = np.zeros(len(g), bool)
            span[lo:hi + 1] = True
            reject(g.index.to_numpy()[span], f"resolution_change: meter {m} leaves its {native}-min interval")
            g = g[~span]
        elif changed.any():
            reject(g.index.to_numpy()[changed], "off_grid_timestamp")
            g = g[~changed]
        if target and target < native:
            raise InputError(f"meter {m}: its readings are {native}-min, coarser than --resolution {cfg.resolution}; "
                             f"use --resolution auto or {native}min")
        res = native
        # units -> kWh per native interval
        val = g["value"].to_numpy()
        if cfg.value_unit == "wh":
            val = val / 1000.0
        elif cfg.value_unit == "kw":
            val = val * res / 60.0
        bound = cfg.max_kwh_per_30min * res / 30.0
        missing, negative, absurd = np.isnan(val), val < 0, val > bound
        for mask, reason in ((missing, "missing_value"), (negative, "negative_value"),
                             (absurd, f"implausible_value: above {bound:g} kWh per {res} min")):
            reject(g.index.to_numpy()[mask], reason)
        good = ~(missing | negative | absurd)
        if cfg.stuck_hours:  # a run of zeros or of one repeated value for too long: a stuck meter
            pos = np.flatnonzero(good)
            vg = val[pos]
            for lo, hi, hours in _stuck_runs(g["t"].to_numpy()[pos], vg, res, cfg.stuck_hours, cfg.max_gap_h):
                kind, what = ("stuck_zero", "0") if vg[lo] == 0 else ("stuck_constant", f"{vg[lo]:g} kWh")
                reject(g.index.to_numpy()[pos[lo:hi]],
                       f"{kind}: meter {m} reads {what} for {hours:.1f} h (over --stuck-hours {cfg.stuck_hours:g})")
                good[pos[lo:hi]] = False
        tm, val, rows_kept = g["t"].to_numpy()[good], val[good], int(good.sum())
        if target and target > res:  # resample to the coarser target: complete intervals only
            step = target * NS_MIN
            slot = tm // step
            u, inv, cnt = np.unique(slot, return_inverse=True, return_counts=True)
            sums = np.bincount(inv, weights=val)
            full = cnt == target // res
            incomplete_rows = ~full[inv]
            reject(g.index.to_numpy()[good][incomplete_rows], "incomplete_interval_after_resampling")
            rows_kept -= int(incomplete_rows.sum())
            tm, val, res = u[full] * step, sums[full], target
        if not len(tm):
            continue
        # fill gaps up to max_gap_h linearly (flagged)
        step = res * NS_MIN
        n_missing = np.diff(tm) // step - 1
        fillable = (n_missing > 0) & (n_missing * res <= cfg.max_gap_h * 60)
        filled = np.zeros(len(tm), bool)
        if fillable.any():
            new_t = np.concatenate([tm[i] + step * np.arange(1, n_missing[i] + 1) for i in np.flatnonzero(fillable)])
            all_t = np.concatenate([tm, new_t])
            order = np.argsort(all_t, kind="stable")
            all_v = np.interp(all_t.astype(np.float64), tm.astype(np.float64), val)
            tm, val = all_t[order], all_v[order]
            filled = np.r_[np.zeros(len(tm) - len(new_t), bool), np.ones(len(new_t), bool)][order]
        counts["filled"] += int(filled.sum())
        out_frames.append(pd.DataFrame({"meter_id": m, "timestamp": tm, "kwh": val.astype(np.float32),
                                        "interval_min": np.int16(res), "filled": filled}))
        span_n = (tm[-1] - tm[0]) // step + 1
        coverage.append({"meter_id": str(m), "first": str(pd.Timestamp(tm[0], tz="UTC").tz_convert(cfg.tz)),
                         "last": str(pd.Timestamp(tm[-1], tz="UTC").tz_convert(cfg.tz)), "interval_min": int(res),
                         "rows_kept": rows_kept, "filled": int(filled.sum()),
                         "coverage": round(float((len(tm) - filled.sum()) / span_n), 4)})
    if not out_frames:
        return pd.DataFrame(columns=["meter_id", "timestamp", "kwh", "interval_min", "filled"]), coverage
    out = pd.concat(out_frames, ignore_index=True)
    out["timestamp"] = pd.DatetimeIndex(out["timestamp"].to_numpy(np.int64).astype("datetime64[ns]"), tz="UTC").tz_convert(cfg.tz)
    return out, coverage


def _stuck_runs(
    t: np.ndarray, v: np.ndarray, res_min: int, hours: float, max_gap_h: float = 2.0
) -> list[tuple[int, int, float]]:
    """(start, stop, hours) of every run of one repeated value in ``v`` (readings at times ``t``, ns, sorted)
    that lasts longer than ``hours``, counting the last reading's own interval. A gap longer than
    ``max_gap_h`` ends a run: two equal readings days apart are not a stuck meter (LCL has such pairs).

    >>> h = np.arange(6) * 3_600_000_000_000  # hourly readings
    >>> _stuck_runs(h, np.array([1.0, 0, 0, 0, 2, 2]), 60, 2.5)
    [(1, 4, 3.0)]
    >>> _stuck_runs(np.array([0, 96]) * 3_600_000_000_000, np.array([0.017, 0.017]), 30, 24)  # 4 days apart
    []
    """
    if len(v) == 0:
        return []
    gap = np.diff(t) > (max(max_gap_h * 60, res_min) + res_min) * 60e9  # ns: longer than a fillable gap
    starts = np.flatnonzero(np.r_[True, (v[1:] != v[:-1]) | gap])
    stops = np.r_[starts[1:], len(v)]
    span_h = (t[stops - 1] - t[starts]) / 3.6e12 + res_min / 60
    return [(int(a), int(b), float(h)) for a, b, h in zip(starts, stops, span_h) if h > hours]


_VALIDATOR = None


def _init_worker(validate: bool, max_kwh: float) -> None:
    """Build the GE context once per process (it costs seconds); a pool initialiser, so that it overlaps pass 1."""
    global _VALIDATOR
    if validate and (_VALIDATOR is None or _VALIDATOR.max_kwh != max_kwh):
        from energy_btgm.validation import Validator

        _VALIDATOR = Validator(max_kwh=max_kwh)


def resolve_sources(sources: list[Path]) -> list[Path]:
    """The data files of ``sources`` (files, or folders searched recursively); a clear error for a missing one."""
    files = []
    for s in map(Path, sources):
        if s.is_dir():
            found = sorted(p for p in s.rglob("*") if p.is_file() and p.name.endswith((".csv", ".csv.gz", ".parquet", ".txt")))
            if not found:
                raise InputError(f"{s}: folder holds no .csv, .csv.gz or .parquet file")
            files += found
        elif not s.exists():
            raise InputError(f"{s}: no such file or folder")
        else:
            files.append(s)
    return files


def _auto_partitions(files: list[Path]) -> int:
    """One partition per ~``BUCKET_ROWS`` rows, estimated from the files' sizes."""
    bytes_per_row = 6 if files[0].suffix == ".parquet" else 40
    return max(1, math.ceil(sum(f.stat().st_size for f in files) / bytes_per_row / BUCKET_ROWS))


def stage(sources: list[Path], store: Path, cfg: IngestConfig, partitions: int | None = None,
          progress: bool = False) -> dict:
    """Pass 1: check the sources and spill their rows into partitions of households (by meter-id hash).

    Returns the plan (also written to ``<staging>/plan.json``): the staging folder under the store, the
    partition names for ``clean_partition`` and the rows read. ``partitions`` defaults to one per ~2 M rows.
    """
    cfg.validate()
    t0 = time.perf_counter()
    files = resolve_sources(sources)
    for f in files:  # file-level errors before any work
        check_file(f, cfg.fmt, meter_col=cfg.meter_col, time_col=cfg.time_col, value_col=cfg.value_col, delimiter=cfg.delimiter)
    if partitions is not None and partitions < 1:
        raise ParameterError(f"--partitions must be at least 1, got {partitions}")
    k = partitions or _auto_partitions(files)
    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".ingest-", dir=store))
    try:
        for sub in ("spill", "readings", "parts"):
            (staging / sub).mkdir()
        quarantine = _Quarantine()
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(desc="ingest: read", unit=" rows", unit_scale=True)
        try:
            rows_in = _spill(files, cfg, staging / "spill", k, quarantine, bar)
        finally:
            if bar is not None:
                bar.close()
        atomic_write_parquet(staging / "parts" / "read-quarantine.parquet", quarantine.table())
        plan = {"staging": str(staging), "config": dataclasses.asdict(cfg), "files": [str(f) for f in files],
                "rows_in": rows_in, "read_quarantine_counts": dict(quarantine.counts),
                "partitions": sorted(p.stem for p in (staging / "spill").glob("bucket-*.arrow")),
                "read_seconds": round(time.perf_counter() - t0, 2)}
        atomic_write_text(staging / "plan.json", json.dumps(plan, indent=1))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return plan


def clean_partition(staging: Path, partition: str, validate: bool = True) -> dict:
    """Pass 2 on one partition (all rows of its households): clean, validate with ``readings-v1``, write its
    readings and quarantine under the staging folder. Idempotent, so a retried task redoes it cleanly."""
    from energy_btgm.validation import READINGS_SUITE, readings_frame_for_suite

    staging = Path(staging)
    plan = json.loads((staging / "plan.json").read_text())
    cfg = IngestConfig(**plan["config"])
    quarantine, counts = _Quarantine(), Counter()
    with pa.memory_map(str(staging / "spill" / f"{partition}.arrow")) as src:
        df = ipc.open_file(src).read_all().to_pandas()
    clean, cov = _clean_bucket(df, cfg, plan["files"], quarantine, counts)
    del df
    result = None
    part = staging / "readings" / f"bucket={partition.split('-')[1]}"
    shutil.rmtree(part, ignore_errors=True)
    if len(clean):
        if validate:
            _init_worker(True, cfg.max_kwh_per_30min * 2)
            result = _VALIDATOR.validate(READINGS_SUITE, readings_frame_for_suite(clean))
        with atomic_dir(part, overwrite=True) as tmp:
            pq.write_table(pa.Table.from_pandas(clean, preserve_index=False), tmp / "part-0.parquet", compression="zstd")
    atomic_write_parquet(staging / "parts" / f"{partition}-quarantine.parquet", quarantine.table())
    out = {"partition": partition, "coverage": cov, "quarantine_counts": dict(quarantine.counts), "counts": dict(counts),
           "validation": result, "rows_kept": sum(c["rows_kept"] for c in cov), "rows_quarantined": len(quarantine.table()),
           "rows_out": len(clean), "rows_filled": int(clean["filled"].sum()) if len(clean) else 0}
    atomic_write_text(staging / "parts" / f"{partition}.json", json.dumps(out, default=str))
    return {k: out[k] for k in ("partition", "rows_kept", "rows_quarantined")}


def finish(staging: Path, store: Path, reports: Path = Path("reports"), validate: bool = True,
           started: float | None = None) -> dict:
    """Gather the cleaned partitions into ``<store>/readings`` (replaced atomically), write the quarantine file,
    the validation results and the manifest; remove the staging folder. Returns the manifest (with the
    seconds since ``started``, a ``time.perf_counter()`` value, when given)."""
    from energy_btgm.validation import READINGS_SUITE

    staging, store = Path(staging), Path(store)
    plan = json.loads((staging / "plan.json").read_text())
    missing = [p for p in plan["partitions"] if not (staging / "parts" / f"{p}.json").exists()]
    if missing:
        raise RuntimeError(f"{staging}: partitions {missing[:5]} were not cleaned; run clean_partition on them first")
    parts = [json.loads((staging / "parts" / f"{p}.json").read_text()) for p in plan["partitions"]]
    q = pa.concat_tables([pq.read_table(staging / "parts" / "read-quarantine.parquet")] +
                         [pq.read_table(staging / "parts" / f"{p}-quarantine.parquet") for p in plan["partitions"]])
    qcounts = Counter(plan["read_quarantine_counts"])
    counts: Counter = Counter()
    for p in parts:
        qcounts.update(p["quarantine_counts"])
        counts.update(p["counts"])
    coverage = [c for p in parts for c in p["coverage"]]
    rows_in, rows_q, rows_kept = plan["rows_in"], q.num_rows, sum(p["rows_kept"] for p in parts)
    qpath = store / "quarantine" / "readings-quarantine.parquet"
    atomic_write_parquet(qpath, q)
    validation = None
    if validate:
        from energy_btgm.validation import write_results

        vpath = Path(reports) / "validation" / "readings.json"
        validation = write_results(vpath, READINGS_SUITE, [p["validation"] for p in parts if p["validation"] is not None])
        validation["result_file"] = str(vpath)
    files = [Path(f) for f in plan["files"]]
    times = [(c["first"], c["last"]) for c in coverage]
    manifest = {
        "produced_by": f"energy-btgm {code_version()} ingest",
        "config": plan["config"],
        "sources": [{"path": str(f), "sha256": sha256_file(f), "bytes": f.stat().st_size} for f in files],
        "partitions": len(parts),
        "counts": {"rows_in": rows_in, "rows_kept": rows_kept, "rows_quarantined": rows_q,
                   "quarantined_by_reason": dict(sorted(qcounts.items())),
                   "exact_duplicates_dropped": qcounts.get("exact_duplicate", 0),
                   "rows_repaired_filled": sum(p["rows_filled"] for p in parts), "rows_out": sum(p["rows_out"] for p in parts),
                   "dst_ambiguous_resolved": counts["dst_ambiguous_resolved"],
                   "dst_nonexistent_shifted": counts["dst_nonexistent_shifted"]},
        "balanced": rows_in == rows_kept + rows_q,
        "meters": len(coverage),
        "date_range": [min(a for a, _ in times), max(b for _, b in times)] if times else None,
        "coverage": coverage,
        "quarantine_file": str(qpath),
        "validation": validation,
    }
    if started is not None:
        manifest["seconds"] = round(time.perf_counter() - started, 2)
    if not manifest["balanced"]:
        raise RuntimeError(f"row accounting broken: {rows_in} in != {rows_kept} kept + {rows_q} quarantined; please report this")
    if validation is not None and not validation["success"]:
        raise InputError(f"the readings failed validation suite {READINGS_SUITE} after cleaning; "
                         f"see {validation['result_file']} for the failing expectations")
    (staging / "readings" / "_manifest.json").write_text(json.dumps(manifest, indent=1))
    replace_dir(staging / "readings", store / "readings")
    shutil.rmtree(staging, ignore_errors=True)
    return manifest


def ingest(sources: list[Path], store: Path, cfg: IngestConfig, reports: Path = Path("reports"),
           progress: bool = False, validate: bool = True, partitions: int | None = None) -> dict:
    """Ingest ``sources`` into ``<store>/readings`` and ``<store>/quarantine``; return the manifest.

    ``stage`` → ``clean_partition`` per partition (in 2 worker processes when there are several) → ``finish``.
    The Prefect flow ``ingest-meters`` runs the same three steps as tasks, one per partition.
    """
    cfg.validate()
    t0 = time.perf_counter()
    # the workers start before pass 1, so that their imports and GE contexts are built while it reads
    partitions = partitions or _auto_partitions(resolve_sources(sources))
    workers = min(2, os.cpu_count() or 1, partitions)
    pool = None
    if workers > 1:
        import concurrent.futures
        import multiprocessing

        pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                                      initializer=_init_worker, initargs=(validate, cfg.max_kwh_per_30min * 2))
        for _ in range(workers):
            pool.submit(os.getpid)
    else:  # a fresh context for this run in this process
        global _VALIDATOR
        _VALIDATOR = None
        _init_worker(validate, cfg.max_kwh_per_30min * 2)
    plan = None
    try:
        plan = stage(sources, store, cfg, partitions=partitions, progress=progress)
        staging, names = Path(plan["staging"]), plan["partitions"]
        if pool is not None:
            outcomes = pool.map(clean_partition, [staging] * len(names), names, [validate] * len(names))
        else:
            outcomes = (clean_partition(staging, n, validate) for n in names)
        if progress:
            from tqdm import tqdm

            outcomes = tqdm(outcomes, total=len(names), desc="ingest: clean+validate", unit=" partition")
        for _ in outcomes:
            pass
        manifest = finish(staging, store, reports, validate, started=t0)
    except BaseException:
        if plan is not None:
            shutil.rmtree(plan["staging"], ignore_errors=True)
        raise
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return manifest


def read_manifest(store: Path) -> dict:
    path = Path(store) / "readings" / "_manifest.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; run `energy-btgm ingest` first")
    return json.loads(path.read_text())
