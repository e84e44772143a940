"""Synthetic household smart-meter data: the built-in, offline default data set.

The generator writes what a real meter export holds, in long format (``meter_id``, ``timestamp``
in local time, ``kwh`` per interval), plus a household table and a daily regional temperature
table. Load is built in kW on a regular grid of instants and converted to kWh per interval:

- daily shapes by occupancy archetype (working adults, family with children, at home all day,
  night shift), weekday vs weekend, with per-household and per-day timing jitter;
- one regional temperature series (seasonal cycle, AR(1) anomalies, multi-day cold spells), the
  common driver of electric space heating below about 15 °C;
- public holidays (treated as Sundays), whole vacation weeks at base load, heavy-tailed appliance
  events (cooking, laundry, water heating) and evening EV charging;
- lognormal household scale.

Everything is vectorised over (households, intervals) and written chunk by chunk, so memory
stays bounded by the chunk size, whatever the number of households. Same config, same bytes.

Timestamps label the *start* of each interval. Without ``defects`` they are timezone-aware
(local zone); with ``defects`` they are naive local wall-clock times as many exports carry them,
so that the autumn DST hour appears twice and the spring hour is missing.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from energy_btgm import __version__
from energy_btgm.data.config import SynthConfig
from energy_btgm.store import atomic_dir

ARCHETYPES = ("working", "family", "home_all_day", "night_shift")
ARCHETYPE_SHARES = (0.40, 0.30, 0.20, 0.10)
# Calibrated to Low Carbon London 2013 (325 London homes; ``describe.LCL_2013``): base load, household spread,
# appliance powers and the EV share set so that consumption, individual weekly peaks, and the diversity factor
# and ADMD of groups of 10 and 100 land near London's medians (``energy-btgm synth --describe`` shows both).
BASE_KW = 0.12  # base load (fridge, standby, ventilation) at household scale 1
SCALE_SIGMA = 0.5  # sigma of the lognormal household scale
# Country of public holidays by time zone (treated as Sundays); unknown zones get none.
HOLIDAY_COUNTRY = {
    "Europe/Paris": "FR", "Europe/London": "GB", "Europe/Berlin": "DE", "Europe/Madrid": "ES",
    "Europe/Rome": "IT", "Europe/Brussels": "BE", "Europe/Amsterdam": "NL", "Europe/Lisbon": "PT",
    "Europe/Dublin": "IE", "America/New_York": "US", "America/Chicago": "US",
    "America/Los_Angeles": "US", "Australia/Sydney": "AU",
}



# --- building blocks --------------------------------------------------------------------------

def time_grid(cfg: SynthConfig) -> pd.DatetimeIndex:
    """Interval starts, tz-aware, regular in absolute time from ``start`` local for ``weeks`` weeks."""
    t0 = pd.Timestamp(cfg.start).tz_localize(cfg.tz)
    t1 = (pd.Timestamp(cfg.start) + pd.Timedelta(weeks=cfg.weeks)).tz_localize(cfg.tz)
    return pd.date_range(t0, t1, freq=f"{cfg.interval_min}min", inclusive="left")


def temperature_series(dates: pd.DatetimeIndex, rng: np.random.Generator) -> np.ndarray:
    """Daily regional mean temperature [°C]: seasonal cycle + AR(1) anomaly + cold spells."""
    doy = dates.day_of_year.to_numpy()
    seasonal = 11.5 - 8.0 * np.cos(2 * np.pi * (doy - 20) / 365.25)  # ~3.5 °C in Jan, ~19.5 °C in Jul
    n = len(dates)
    eps = rng.normal(0.0, 1.6, n)
    anomaly = np.empty(n)
    a = 0.0
    for i in range(n):  # one loop per day, not per reading
        a = 0.8 * a + eps[i]
        anomaly[i] = a
    spells = np.zeros(n)
    winter = np.isin(dates.month.to_numpy(), (11, 12, 1, 2, 3))
    starts = np.flatnonzero(winter & (rng.random(n) < 1 / 45))  # ~3 spells a winter
    for s in starts:
        length, depth = rng.integers(3, 10), rng.uniform(4.0, 9.0)
        ramp = np.sin(np.linspace(0.3, np.pi - 0.3, length))
        seg = slice(s, min(n, s + length))
        spells[seg] = np.minimum(spells[seg], -depth * ramp[: seg.stop - seg.start])
    return (seasonal + anomaly + spells).astype(np.float32)


def _bumps(hour: np.ndarray, centers, widths, heights) -> np.ndarray:
    """Sum of periodic Gaussian bumps over hour of day. hour: (...), returns (...)."""
    out = np.zeros_like(hour, dtype=np.float64)
    for c, w, h in zip(centers, widths, heights):
        d = (hour - c + 12.0) % 24.0 - 12.0
        out += h * np.exp(-0.5 * (d / w) ** 2)
    return out


# activity profile [kW at scale 1] by archetype and day type: (centers h, widths h, heights kW)
PROFILES = {
    ("working", False): ((7.0, 12.5, 19.5, 22.5), (0.9, 2.0, 1.8, 1.0), (0.45, 0.18, 0.52, 0.20)),
    ("working", True): ((9.5, 13.0, 19.5, 22.5), (1.5, 2.0, 1.8, 1.0), (0.35, 0.45, 0.50, 0.22)),
    ("family", False): ((7.0, 15.5, 19.0, 21.5), (0.9, 2.5, 1.6, 1.2), (0.55, 0.35, 0.58, 0.28)),
    ("family", True): ((9.0, 12.5, 19.0, 21.5), (1.5, 2.0, 1.7, 1.2), (0.45, 0.55, 0.55, 0.28)),
    ("home_all_day", False): ((8.0, 12.5, 18.5, 21.0), (1.5, 2.5, 2.0, 1.5), (0.35, 0.50, 0.48, 0.25)),
    ("home_all_day", True): ((8.5, 12.5, 18.5, 21.0), (1.5, 2.5, 2.0, 1.5), (0.35, 0.50, 0.48, 0.25)),
    ("night_shift", False): ((15.0, 19.0, 23.5, 3.0), (1.5, 1.5, 1.5, 1.5), (0.35, 0.45, 0.55, 0.30)),
    ("night_shift", True): ((11.0, 14.0, 19.5, 23.0), (2.0, 1.5, 1.8, 1.5), (0.30, 0.45, 0.50, 0.30)),
}

# appliance events: daily rate, start-hour distribution (centers, widths, weights), power [kW]
# lognormal (median, sigma), duration [h] (min, max); sizes heavy-tailed through the lognormal.
EVENTS = {
    "cooking": (0.9, ((12.3, 19.0), (1.0, 1.3), (0.45, 0.55)), (0.85, 0.45), (0.5, 1.0)),
    "laundry": (0.45, ((10.0, 18.0), (2.5, 3.0), (0.55, 0.45)), (0.85, 0.40), (1.0, 2.0)),
    "water_heating": (0.35, ((6.5, 14.0, 23.0), (1.0, 2.0, 1.0), (0.4, 0.2, 0.4)), (1.3, 0.35), (0.5, 1.0)),
}


def households_table(cfg: SynthConfig) -> pd.DataFrame:
    """One row per household: id, archetype, electric heating, EV, scale (lognormal)."""
    rng = np.random.default_rng([cfg.seed, 1])
    n = cfg.households
    width = max(4, len(str(n - 1)))
    return pd.DataFrame({
        "meter_id": [f"SYN{i:0{width}d}" for i in range(n)],
        "archetype": rng.choice(ARCHETYPES, size=n, p=ARCHETYPE_SHARES),
        "heating": rng.random(n) < cfg.heating_share,
        "ev": rng.random(n) < cfg.ev_share,
        "scale": np.exp(rng.normal(0.0, SCALE_SIGMA, n)).astype(np.float32),
    })


class _Calendar:
    """Per-interval local calendar facts, computed once per run. All arrays have shape (S,)."""

    def __init__(self, cfg: SynthConfig):
        grid = time_grid(cfg)
        self.grid = grid
        local = grid.tz_localize(None)  # wall clock (tz-aware index -> naive local)
        self.hour = (local.hour + local.minute / 60.0).to_numpy()
        dates = local.normalize()
        self.dates = pd.DatetimeIndex(dates.unique())
        self.day = np.searchsorted(self.dates.to_numpy(), dates.to_numpy())  # (S,) day index
        self.day_start = np.searchsorted(self.day, np.arange(len(self.dates)))  # (D,) first interval of each day
        country = HOLIDAY_COUNTRY.get(cfg.tz)
        is_holiday = np.zeros(len(self.dates), dtype=bool)
        if country:
            import holidays

            hol = holidays.country_holidays(country, years=sorted(set(self.dates.year)))
            is_holiday = np.array([d.date() in hol for d in self.dates])
        self.day_off = (self.dates.day_of_week.to_numpy() >= 5) | is_holiday  # (D,)
        self.week = self.day // 7  # (S,) week index (days run from a Monday)
        self.n_weeks = cfg.weeks
        rng = np.random.default_rng([cfg.seed, 2])
        self.temp_c = temperature_series(self.dates, rng)  # (D,)
        # within-day temperature swing (coldest near 06:00) for the heating driver
        self.temp_slot = self.temp_c[self.day] - 3.0 * np.cos(2 * np.pi * (self.hour - 15.0) / 24.0)


def _add_rectangles(flat, S, hi, start, dur, kw, keep) -> None:
    """Add ``kw`` over ``dur`` intervals from ``start`` for household ``hi`` to ``flat`` (H*S,); events not kept
    (on vacation weeks) do not happen."""
    hi, start, dur, kw = hi[keep], start[keep], dur[keep], kw[keep]
    for k in range(int(dur.max(initial=0))):
        m = (dur > k) & (start + k < S)
        np.add.at(flat, hi[m] * S + start[m] + k, kw[m])


def _household_load_kw(cfg: SynthConfig, cal: _Calendar, hh: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
    """Average power [kW] per household and interval, shape (H, S)."""
    H, S, D = len(hh), len(cal.hour), len(cal.dates)
    scale = hh["scale"].to_numpy(np.float64)[:, None]  # (H, 1)

    # base load: fridge, standby, ventilation
    base = BASE_KW * scale * np.exp(rng.normal(0, 0.15, (H, 1)))  # (H, 1)

    # activity by archetype and day type, with household and day timing jitter
    shift_h = rng.normal(0, 1.0, (H, 1)) + rng.normal(0, 0.8, (H, D))[:, cal.day]  # (H, S)
    hour = cal.hour[None, :] - shift_h  # (H, S)
    day_off = cal.day_off[cal.day][None, :]  # (1, S)
    activity = np.zeros((H, S))
    arche = hh["archetype"].to_numpy()
    for (name, off), (c, w, h) in PROFILES.items():
        rows = arche == name
        if rows.any():
            act = _bumps(hour[rows], c, w, h)
            activity[rows] += np.where(day_off == off, act, 0.0)
    day_mult = np.exp(rng.normal(0, 0.25, (H, D)))[:, cal.day]  # (H, S)
    load = base + 0.5 * scale * activity * day_mult

    # electric space heating below the threshold: morning and evening thermostat programmes
    heated = hh["heating"].to_numpy()
    if heated.any():
        dd = np.clip(cfg.heating_threshold_c - cal.temp_slot, 0.0, None)[None, :]  # (1, S) degrees below
        programme = 0.75 + _bumps(cal.hour[None, :], (7.0, 19.5), (1.5, 2.5), (0.35, 0.3))  # (1, S)
        k = 0.07 * np.exp(rng.normal(0, 0.25, (int(heated.sum()), 1)))  # kW per degree at scale 1
        load[heated] += scale[heated] * k * dd * programme

    # vacations: whole weeks at base load (heating set back to frost protection)
    away_week = rng.random((H, cal.n_weeks)) < cfg.vacation_share  # (H, W)
    away = away_week[:, np.minimum(cal.week, cal.n_weeks - 1)]  # (H, S)
    load = np.where(away, base + 0.15 * (load - base) * heated[:, None], load)

    flat = load.ravel()  # (H*S,) events are added in place through this view
    slots_per_h = 60 / cfg.interval_min

    def add_events(rate_per_day, start_centers, start_widths, start_weights, kw_median, kw_sigma, dur_h, hh_mask):
        n_ev = rng.poisson(rate_per_day * hh_mask[:, None], (H, D))  # (H, D)
        hi, di = np.nonzero(n_ev)
        hi, di = np.repeat(hi, n_ev[hi, di]), np.repeat(di, n_ev[hi, di])
        n = len(hi)
        comp = rng.choice(len(start_centers), size=n, p=np.asarray(start_weights) / sum(start_weights))
        start_h = np.asarray(start_centers)[comp] + rng.normal(0, 1, n) * np.asarray(start_widths)[comp]
        start = cal.day_start[di] + np.floor(np.mod(start_h, 24.0) * slots_per_h).astype(np.int64)
        kw = kw_median * np.exp(rng.normal(0, kw_sigma, n)) * hh["scale"].to_numpy()[hi] ** 0.5
        dur = np.maximum(1, np.round(rng.uniform(*dur_h, n) * slots_per_h)).astype(np.int64)
        # events scheduled on vacation weeks do not happen
        _add_rectangles(flat, S, hi, start, dur, kw, ~away[hi, np.minimum(start, S - 1)])

    everyone = np.ones(H)
    for (rate, (c, w, wt), (kw_med, kw_sig), dur) in EVENTS.values():
        add_events(rate, c, w, wt, kw_med, kw_sig, dur, everyone)

    # EV charging: ~3 sessions a week, mostly starting in the evening, 3.7 or 7.4 kW
    ev = hh["ev"].to_numpy()
    if ev.any():
        charger_kw = np.where(rng.random(H) < 0.6, 3.7, 7.4)
        n_ev = rng.poisson(0.42 * ev[:, None], (H, D))
        hi, di = np.nonzero(n_ev)
        start_h = np.where(rng.random(len(hi)) < 0.75, rng.normal(20.5, 2.0, len(hi)), rng.uniform(0, 24, len(hi)))
        start = cal.day_start[di] + np.floor(np.mod(start_h, 24) * slots_per_h).astype(np.int64)
        energy_kwh = rng.uniform(5, 20, len(hi))
        dur = np.maximum(1, np.round(energy_kwh / charger_kw[hi] * slots_per_h)).astype(np.int64)
        _add_rectangles(flat, S, hi, start, dur, charger_kw[hi], ~away[hi, np.minimum(start, S - 1)])

    # small fast fluctuations
    load *= np.exp(rng.normal(0, 0.08, (H, S)))
    return load


def _inject_defects(df: pd.DataFrame, rng: np.random.Generator, log: dict) -> pd.DataFrame:
    """Missing intervals, duplicates (some conflicting), a stuck-at-zero period, a negative reading."""
    n = len(df)
    meters = df["meter_id"].unique()
    # missing: scattered single intervals and one multi-hour gap per affected meter
    drop = rng.random(n) < 0.0005
    m = meters[rng.integers(len(meters))]
    idx = np.flatnonzero(df["meter_id"].to_numpy() == m)
    g0 = idx[len(idx) // 3]
    drop[g0:g0 + 3] = True  # a short gap, fillable
    stuck = idx[len(idx) // 2]
    kwh = df["kwh"].to_numpy().copy()
    kwh[stuck:stuck + 96] = 0.0  # stuck at zero for two days at half-hourly resolution
    neg = idx[2 * len(idx) // 3]
    kwh[neg] = -abs(kwh[neg]) - 0.1
    df = df.assign(kwh=kwh)
    dup = rng.choice(n, size=max(2, n // 2000), replace=False)
    dups = df.iloc[dup].copy()
    conflicting = rng.random(len(dups)) < 0.3
    dups.loc[conflicting, "kwh"] = dups.loc[conflicting, "kwh"] * 1.5 + 0.05
    log["missing"] += int(drop.sum())
    log["duplicates_exact"] += int((~conflicting).sum())
    log["duplicates_conflicting"] += int(conflicting.sum())
    log["stuck_zero"] += 96
    log["negative"] += 1
    return pd.concat([df[~drop], dups], ignore_index=True)


def generate(cfg: SynthConfig, out: Path, overwrite: bool = False, progress: bool = False) -> dict:
    """Generate the data set under ``out`` (atomically) and return its provenance record.

    Layout: ``readings/part-NNNNN.parquet`` (meter_id, timestamp, kwh), ``households.parquet``,
    ``weather.parquet`` (date, temp_c) and ``synth.json`` (config, counts, code version).
    """
    cfg.validate()
    out = Path(out)
    cal = _Calendar(cfg)
    hh = households_table(cfg)
    dt_h = cfg.interval_min / 60.0
    local_naive = cal.grid.tz_localize(None)
    ts_aware = pa.array(cal.grid)  # timestamp[ns, tz]
    defects_log = {"missing": 0, "duplicates_exact": 0, "duplicates_conflicting": 0, "stuck_zero": 0, "negative": 0}
    rows = 0
    chunks = range(0, cfg.households, cfg.chunk_households)
    if progress:
        from tqdm import tqdm

        chunks = tqdm(chunks, desc="synth", unit="chunk", total=len(chunks))
    with atomic_dir(out, overwrite=overwrite) as tmp:
        (tmp / "readings").mkdir()
        for ci, h0 in enumerate(chunks):
            part = hh.iloc[h0:h0 + cfg.chunk_households]
            rng = np.random.default_rng([cfg.seed, 3, ci])
            kw = _household_load_kw(cfg, cal, part, rng)  # (H, S)
            H, S = kw.shape
            kwh = (kw * dt_h).astype(np.float32).ravel()
            meter = pa.DictionaryArray.from_arrays(
                pa.array(np.repeat(np.arange(H, dtype=np.int32), S)), pa.array(part["meter_id"].to_numpy()))
            if cfg.defects:
                df = pd.DataFrame({"meter_id": np.repeat(part["meter_id"].to_numpy(), S),
                                   "timestamp": np.tile(local_naive.to_numpy(), H), "kwh": kwh})
                df = _inject_defects(df, rng, defects_log)
                table = pa.Table.from_pandas(df, preserve_index=False)
            else:
                ts = pa.concat_arrays([ts_aware] * H) if H else ts_aware
                table = pa.table({"meter_id": meter, "timestamp": ts, "kwh": pa.array(kwh)})
            pq.write_table(table, tmp / "readings" / f"part-{ci:05d}.parquet", compression="zstd")
            rows += table.num_rows
        hh.to_parquet(tmp / "households.parquet", index=False)
        pd.DataFrame({"date": cal.dates.date, "temp_c": cal.temp_c}).to_parquet(tmp / "weather.parquet", index=False)
        record = {
            "produced_by": f"energy-btgm {__version__} synth",
            "config": dataclasses.asdict(cfg),
            "rows": rows,
            "households": cfg.households,
            "timestamps": "naive local wall clock (DST as exported)" if cfg.defects else f"tz-aware {cfg.tz}",
            "interval_start_labelled": True,
            "defects_injected": defects_log if cfg.defects else None,
        }
        (tmp / "synth.json").write_text(json.dumps(record, indent=2))
    return record


def read_readings(path: Path, columns=None) -> pd.DataFrame:
    """Read the readings of a generated data set (or any long-format Parquet file/folder)."""
    path = Path(path)
    target = path / "readings" if (path / "readings").is_dir() else path
    return pq.read_table(target, columns=columns).to_pandas()
