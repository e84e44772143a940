import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from energy_btgm.data.describe import TARGETS, check, describe
from energy_btgm.data.synth import SynthConfig, generate, read_readings


def small(**kw):
    base = dict(households=12, weeks=2, seed=3, chunk_households=5)
    base.update(kw)
    return SynthConfig(**base)


def test_same_seed_same_bytes_different_seed_differs(tmp_path):
    generate(small(), tmp_path / "a")
    generate(small(), tmp_path / "b")
    generate(small(seed=4), tmp_path / "c")
    a, b, c = (read_readings(tmp_path / x) for x in "abc")
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["kwh"], c["kwh"])
    for f in ("households.parquet", "weather.parquet"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()


def test_output_schema_and_layout(tmp_path):
    cfg = small(resolution="60min")
    rec = generate(cfg, tmp_path / "o")
    out = tmp_path / "o"
    parts = sorted((out / "readings").glob("part-*.parquet"))
    assert len(parts) == 3  # 12 households in chunks of 5
    schema = pq.read_schema(parts[0])
    assert schema.names == ["meter_id", "timestamp", "kwh"]
    ts_type = schema.field("timestamp").type
    assert pa.types.is_timestamp(ts_type) and ts_type.tz == "Europe/Paris"
    assert str(schema.field("kwh").type) == "float"
    df = read_readings(out)
    assert len(df) == rec["rows"] == 12 * 2 * 7 * 24
    assert df.groupby("meter_id").size().eq(2 * 7 * 24).all()
    assert (df["kwh"] > 0).all()
    hh = pd.read_parquet(out / "households.parquet")
    assert list(hh.columns) == ["meter_id", "archetype", "heating", "ev", "scale"]
    assert set(hh["meter_id"]) == set(df["meter_id"].astype(str))
    weather = pd.read_parquet(out / "weather.parquet")
    assert list(weather.columns) == ["date", "temp_c"] and len(weather) == 14
    meta = json.loads((out / "synth.json").read_text())
    assert meta["config"]["seed"] == 3 and meta["rows"] == len(df)
    assert df["timestamp"].iloc[0] == pd.Timestamp("2023-01-02 00:00", tz="Europe/Paris")


def test_defects_are_what_an_export_holds(tmp_path):
    # spans the spring DST change (2023-03-26 in Europe/Paris)
    rec = generate(small(start="2023-03-20", defects=True, households=6), tmp_path / "d")
    df = read_readings(tmp_path / "d")
    log = rec["defects_injected"]
    assert log["negative"] >= 1 and (df["kwh"] < 0).sum() >= 1
    assert df.duplicated(["meter_id", "timestamp"]).sum() == log["duplicates_exact"] + log["duplicates_conflicting"]
    assert df["timestamp"].dt.tz is None  # naive local wall clock
    spring_gap = (df["timestamp"] >= "2023-03-26 02:00") & (df["timestamp"] < "2023-03-26 03:00")
    assert not spring_gap.any()
    assert len(df) == 6 * 14 * 48 - 6 * 2 - log["missing"] + log["duplicates_exact"] + log["duplicates_conflicting"]


def test_autumn_dst_hour_twice_in_defect_export(tmp_path):
    generate(small(start="2023-10-23", defects=True, households=2), tmp_path / "d")
    df = read_readings(tmp_path / "d").drop_duplicates(["meter_id", "timestamp", "kwh"])
    n = df[(df["timestamp"] >= "2023-10-29 02:00") & (df["timestamp"] < "2023-10-29 03:00")].groupby("meter_id").size()
    assert (n >= 3).all()  # 2 half-hours each seen twice, minus at most a random missing one


def test_target_statistics_on_a_year(year_data):
    stats = describe(year_data)
    failed = [(n, v, lo, hi) for n, v, lo, hi, _, ok in check(stats) if not ok]
    assert not failed, failed
    assert set(TARGETS) <= set(stats)


def test_heating_follows_cold_weather(year_data):
    """The common driver: heated homes use more in cold weeks than in mild ones."""
    df = read_readings(year_data)
    hh = pd.read_parquet(year_data / "households.parquet").set_index("meter_id")
    weather = pd.read_parquet(year_data / "weather.parquet")
    day = df["timestamp"].dt.tz_localize(None).dt.normalize()
    daily = df.assign(day=day, heated=df["meter_id"].astype(str).map(hh["heating"])).groupby(["heated", "day"])["kwh"].mean()
    temp = weather.set_index(pd.to_datetime(weather["date"]))["temp_c"]
    r_heated = np.corrcoef(daily.loc[True].to_numpy(), temp.reindex(daily.loc[True].index).to_numpy())[0, 1]
    assert r_heated < -0.8


@pytest.mark.parametrize(
    "args, field",
    [
        (["--households", "0"], "--households"),
        (["--tz", "Mars/Olympus"], "--tz"),
        (["--resolution", "7min"], "--resolution"),
        (["--start", "2023-01-03"], "--start"),
        (["--weeks", "0"], "--weeks"),
    ],
)
def test_bad_arguments_exit_2_one_line_nothing_written(cli_exe, tmp_path, args, field):
    out = tmp_path / "out"
    r = subprocess.run([cli_exe, "synth", "--out", str(out), *args], capture_output=True, text=True)
    assert r.returncode == 2
    assert field in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(cli_exe, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    r = subprocess.run([cli_exe, "synth", "--out", str(out), "--households", "2", "--weeks", "1"], capture_output=True, text=True)
    assert r.returncode == 2 and "--overwrite" in r.stderr
    assert (out / "keep.txt").read_text() == "x"


def test_cli_smoke_generate_and_describe(cli_exe, tmp_path):
    r = subprocess.run([cli_exe, "synth", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--households" in r.stdout and "--defects" in r.stdout
    store = tmp_path / "store"
    r = subprocess.run(
        [cli_exe, "synth", "--store", str(store), "--households", "120", "--weeks", "3", "--quiet"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert (store / "raw" / "synthetic" / "readings").is_dir()
    r = subprocess.run(
        [cli_exe, "synth", "--describe", str(store / "raw" / "synthetic"), "--json", str(tmp_path / "s.json")],
        capture_output=True,
        text=True,
    )
    assert "diversity factor, groups of 100" in r.stdout
    from energy_btgm.data.describe import LCL_2013

    # each statistic beside London's, measured on the Low Carbon London files by the same code
    row = next(line for line in r.stdout.splitlines() if "diversity factor, groups of 10 " in line)
    assert "LCL 2013" in r.stdout and f"{LCL_2013['df10_p50']:.2f}" in row
    assert json.loads((tmp_path / "s.json").read_text())["meters"] == 120


def test_failed_generation_leaves_nothing(tmp_path, monkeypatch):
    import energy_btgm.data.synth as synth

    def boom(*a, **k):
        raise RuntimeError("killed")

    monkeypatch.setattr(synth, "_household_load_kw", boom)
    with pytest.raises(RuntimeError):
        synth.generate(small(), tmp_path / "x")
    assert list(tmp_path.iterdir()) == []


def test_library_does_not_import_prefect():
    code = (
        "import sys, energy_btgm, energy_btgm.data.synth, energy_btgm.data.describe, energy_btgm.cli; "
        "print('prefect' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_the_injected_stuck_meter_is_what_ingest_flags(tmp_path):
    """The defect export's stuck-at-zero stretch (two days) comes out of ingest as stuck_zero, all of it."""
    from energy_btgm.data.ingest import IngestConfig, ingest

    rec = generate(small(start="2023-01-02", defects=True, households=6), tmp_path / "d")
    m = ingest([tmp_path / "d" / "readings"], tmp_path / "s", IngestConfig(), reports=tmp_path / "r", validate=False)
    assert m["counts"]["quarantined_by_reason"]["stuck_zero"] == rec["defects_injected"]["stuck_zero"] > 0
