from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from energy_btgm.data.ingest import IngestConfig, ingest
from energy_btgm.data.readers import InputError

DATA = Path(__file__).parent / "data"


def run(tmp_path, files, **kw):
    cfg = IngestConfig(**{"tz": "Europe/Paris", **kw})
    m = ingest([DATA / f for f in files], tmp_path / "store", cfg, reports=tmp_path / "reports", validate=False)
    c = m["counts"]
    assert c["rows_in"] == c["rows_kept"] + c["rows_quarantined"], c
    q = pd.read_parquet(m["quarantine_file"])
    assert len(q) == c["rows_quarantined"]
    readings = pd.read_parquet(tmp_path / "store" / "readings")
    return m, readings, q


@pytest.mark.parametrize("name", ["formats/long.csv", "formats/long.csv.gz", "formats/long.parquet"])
def test_long_format_csv_gzip_parquet(tmp_path, name):
    m, r, q = run(tmp_path, [name])
    assert m["counts"]["rows_in"] == 192 and len(q) == 0
    assert sorted(r["meter_id"].unique()) == ["M1", "M2"]
    assert str(r["timestamp"].dt.tz) == "Europe/Paris" and r["timestamp"].min() == pd.Timestamp("2023-01-02", tz="Europe/Paris")
    assert (r["interval_min"] == 30).all() and r["kwh"].dtype == np.float32


def test_lcl_datastore_layout_with_null_and_trailing_space(tmp_path):
    m, r, q = run(tmp_path, ["formats/lcl_datastore.csv"], fmt="lcl", tz="Europe/London")
    assert m["counts"]["rows_in"] == 192
    assert list(q["reason"]) == ["missing_value"] and q["line"].iloc[0] == 7  # header is line 1
    assert r["meter_id"].nunique() == 2 and r["filled"].sum() == 1  # the Null half-hour refilled


def test_lcl_redistribution_block_layout(tmp_path):
    m, r, q = run(tmp_path, ["formats/lcl_block_0.csv"], fmt="lcl", tz="Europe/London")
    assert len(r) == 96 and len(q) == 0 and r["kwh"].between(0.05, 1.2).all()


def test_uci_wide_layout_kw_to_kwh(tmp_path):
    m, r, q = run(tmp_path, ["formats/uci_wide.txt"], fmt="wide")
    raw = pd.read_csv(DATA / "formats/uci_wide.txt", sep=";", decimal=",", index_col=0)
    assert sorted(r["meter_id"].unique()) == ["MT_001", "MT_002"] and (r["interval_min"] == 15).all()
    got = r[r["meter_id"] == "MT_001"].sort_values("timestamp")["kwh"].to_numpy()
    np.testing.assert_allclose(got, raw["MT_001"].to_numpy() * 0.25, rtol=1e-5)  # kW over 15 min -> kWh


def test_wide_resampled_to_30min(tmp_path):
    m, r, q = run(tmp_path, ["formats/uci_wide.txt"], fmt="wide", resolution="30min")
    assert (r["interval_min"] == 30).all() and len(r) == 2 * 96
    raw = pd.read_csv(DATA / "formats/uci_wide.txt", sep=";", decimal=",", index_col=0)
    first = r[r["meter_id"] == "MT_002"].sort_values("timestamp")["kwh"].iloc[0]
    assert first == pytest.approx((raw["MT_002"].iloc[0] + raw["MT_002"].iloc[1]) * 0.25, rel=1e-5)


@pytest.mark.parametrize(
    "name, message",
    [
        ("empty.csv", r"empty\.csv: the file is empty"),
        ("wrong_delimiter.csv", r"wrong_delimiter\.csv, line 1: .*delimiter ';'"),
        ("missing_column.csv", r"missing_column\.csv, line 1: missing column\(s\) \['kwh'\].*--value-col"),
        ("truncated.csv.gz", r"truncated\.csv\.gz.*truncated or corrupt gzip.*re-download"),
    ],
)
def test_bad_files_give_clear_errors(tmp_path, name, message):
    with pytest.raises(InputError, match=message):
        ingest([DATA / "bad" / name], tmp_path / "store", IngestConfig(), reports=tmp_path / "r", validate=False)
    assert not (tmp_path / "store" / "readings").exists()


@pytest.mark.parametrize(
    "name, reasons",
    [
        ("text_value.csv", {"non_numeric_value": 1}),
        ("non_utf8.csv", {"invalid_utf8": 1}),
        ("negative_absurd.csv", {"negative_value": 1, "implausible_value": 1}),
        ("conflicting_duplicates.csv", {"exact_duplicate": 1, "conflicting_duplicate": 2}),
        ("malformed_row.csv", {"malformed_row": 1}),
        ("resolution_change.csv", {"resolution_change": 96}),
        ("unsorted.csv", {}),
        ("stuck_meters.csv", {"stuck_zero": 52, "stuck_constant": 50}),  # M3's 20 h of zeros stay (under 24 h)
    ],
)
def test_bad_rows_are_quarantined_with_reason_and_line(tmp_path, name, reasons):
    m, r, q = run(tmp_path, [f"bad/{name}"])
    got = q["reason"].str.split("[ :]", regex=True).str[0].value_counts().to_dict()
    assert got == reasons
    assert (q["line"] >= 2).all() and (q["source_file"].str.endswith(name)).all()
    assert r.groupby("meter_id")["timestamp"].apply(lambda s: s.is_monotonic_increasing and s.is_unique).all()


def test_text_value_line_number_points_at_the_row(tmp_path):
    m, r, q = run(tmp_path, ["bad/text_value.csv"])
    line = q["line"].iloc[0]
    assert (DATA / "bad/text_value.csv").read_text().splitlines()[line - 1].endswith(",abc")


def test_dst_fallback_hour_twice_resolved(tmp_path):
    m, r, q = run(tmp_path, ["bad/dst_fallback.csv"], tz="Europe/London")
    assert len(q) == 0 and m["counts"]["dst_ambiguous_resolved"] == 4
    t = r.sort_values("timestamp")["timestamp"]
    assert t.is_unique and (t.diff().dropna() == pd.Timedelta("30min")).all()
    assert len(t) == 8 + 6  # 22:00..01:30 BST and 01:00..03:30 GMT, all distinct instants


def test_validation_runs_and_writes_results(tmp_path):
    m = ingest([DATA / "formats/long.csv"], tmp_path / "store", IngestConfig(), reports=tmp_path / "reports")
    assert m["validation"]["success"] and Path(m["validation"]["result_file"]).exists()
    assert (tmp_path / "store" / "readings" / "_manifest.json").exists()
    assert m["sources"][0]["sha256"] and m["coverage"][0]["coverage"] == 1.0


def test_line_numbers_stay_right_after_a_malformed_row(tmp_path):
    m, r, q = run(tmp_path, ["bad/malformed_row.csv"])
    assert q["line"].tolist() == [5]
    from energy_btgm.data.readers import read_raw

    lines = [n for t, _ in read_raw(DATA / "bad/malformed_row.csv", "long") for n in t.column("line").to_pylist()]
    text = (DATA / "bad/malformed_row.csv").read_text().splitlines()
    assert 5 not in lines and lines[:5] == [2, 3, 4, 6, 7]
    assert text[6 - 1].startswith("M1,2023-01-02 02:00:00")


def test_readings_suite_catches_duplicates_and_off_grid(tmp_path):
    from energy_btgm.validation import READINGS_SUITE, Validator, readings_frame_for_suite

    t = pd.date_range("2023-01-02", periods=4, freq="30min", tz="Europe/Paris")
    df = pd.DataFrame(
        {"meter_id": "M1", "timestamp": t[[0, 1, 1, 3]], "kwh": np.float32(0.5), "interval_min": np.int16(30), "filled": False}
    )
    res = Validator().validate(READINGS_SUITE, readings_frame_for_suite(df))
    failed = {e["expectation_config"]["kwargs"].get("column") for e in res["results"] if not e["success"]}
    assert not res["success"] and "repeats_previous" in failed
    df2 = df.assign(timestamp=t[[0, 1, 2, 3]] + pd.Timedelta("10min"))
    res2 = Validator().validate(READINGS_SUITE, readings_frame_for_suite(df2))
    assert {e["expectation_config"]["kwargs"].get("column") for e in res2["results"] if not e["success"]} == {"grid_offset_min"}


def test_one_validator_serves_threads():
    """Tasks in threads share the process's validator: concurrent validations of frames of different sizes
    each get their own frame's verdict (GE's context alone mixed them up and failed every expectation)."""
    from concurrent.futures import ThreadPoolExecutor

    from energy_btgm.validation import READINGS_SUITE, Validator, readings_frame_for_suite

    def frame(n, meter):
        t = pd.date_range("2023-01-02", periods=n, freq="30min", tz="Europe/Paris")
        return readings_frame_for_suite(
            pd.DataFrame(
                {"meter_id": meter, "timestamp": t, "kwh": np.float32(0.5), "interval_min": np.int16(30), "filled": False}
            )
        )

    v = Validator()
    frames = [frame(2000 + 3777 * i, f"M{i}") for i in range(8)]  # big enough to overlap (without the lock, 3 of 8 failed)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda f: v.validate(READINGS_SUITE, f), frames))
    assert all(r["success"] for r in results), [e["exception_info"] for r in results for e in r["results"] if not e["success"]][
        :1
    ]


def test_iso_offsets_and_date_formats_parse(tmp_path):
    src = tmp_path / "iso.csv"
    src.write_text(
        "meter_id,timestamp,kwh\n"
        "A,2023-06-01T00:00:00+02:00,0.1\nA,2023-05-31T22:30:00Z,0.2\nA,2023-06-01 01:00:00,0.3\n"
        "A,not a time,0.4\n"
    )
    m = ingest([src], tmp_path / "s", IngestConfig(tz="Europe/Paris"), reports=tmp_path / "r", validate=False)
    r = pd.read_parquet(tmp_path / "s" / "readings").sort_values("timestamp")
    assert r["timestamp"].dt.strftime("%H:%M").tolist() == ["00:00", "00:30", "01:00"]
    assert m["counts"]["quarantined_by_reason"] == {"bad_timestamp": 1}


def test_suite_failure_after_cleaning_fails_the_run_pointing_at_results(tmp_path, monkeypatch):
    import energy_btgm.validation as validation

    strict = validation._readings_expectations
    monkeypatch.setattr(validation, "_readings_expectations", lambda gx, max_kwh: strict(gx, 0.01))
    with pytest.raises(InputError, match=r"failed validation suite readings-v1.*readings\.json"):
        ingest([DATA / "formats/long.csv"], tmp_path / "store", IngestConfig(), reports=tmp_path / "reports")
    assert (tmp_path / "reports" / "validation" / "readings.json").exists()
    assert not (tmp_path / "store" / "readings").exists()


def test_partitions_staged_as_separate_steps_give_the_same_readings(tmp_path):
    """stage → clean_partition (each partition on its own, retried once) → finish equals a one-partition ingest."""
    from energy_btgm.data.ingest import clean_partition, finish, stage

    src = [DATA / "bad" / "conflicting_duplicates.csv", DATA / "formats" / "long.csv"]
    one = ingest(src, tmp_path / "one", IngestConfig(), reports=tmp_path / "r1", validate=False, partitions=1)
    plan = stage(src, tmp_path / "many", IngestConfig(), partitions=4)
    assert len(plan["partitions"]) >= 2 and plan["rows_in"] == one["counts"]["rows_in"]
    with pytest.raises(RuntimeError, match="were not cleaned"):
        finish(plan["staging"], tmp_path / "many", tmp_path / "r2", validate=False)
    kept = 0
    for name in plan["partitions"]:
        clean_partition(plan["staging"], name, validate=False)
        kept += clean_partition(plan["staging"], name, validate=False)["rows_kept"]  # a retry redoes it cleanly
    many = finish(plan["staging"], tmp_path / "many", tmp_path / "r2", validate=False)
    assert (
        many["partitions"] == len(plan["partitions"]) and many["counts"] == one["counts"] and kept == many["counts"]["rows_kept"]
    )
    assert not Path(plan["staging"]).exists()
    a, b = (
        pd.read_parquet(tmp_path / s / "readings")
        .drop(columns="bucket")
        .sort_values(["meter_id", "timestamp"], ignore_index=True)
        for s in ("one", "many")
    )
    pd.testing.assert_frame_equal(a, b)
    qa, qb = (pd.read_parquet(m["quarantine_file"]).sort_values(["source_file", "line"], ignore_index=True) for m in (one, many))
    pd.testing.assert_frame_equal(qa, qb)


def test_stuck_meters_are_flagged_with_their_span_and_the_check_can_be_turned_off(tmp_path):
    m, r, q = run(tmp_path, ["bad/stuck_meters.csv"])
    reasons = sorted(set(q["reason"]))
    assert reasons == [
        "stuck_constant: meter M2 reads 0.25 kWh for 25.0 h (over --stuck-hours 24)",
        "stuck_zero: meter M1 reads 0 for 26.0 h (over --stuck-hours 24)",
    ]
    c = m["counts"]
    assert c["rows_in"] == 432 == c["rows_kept"] + c["rows_quarantined"] and c["rows_quarantined"] == 102
    assert (r[r["meter_id"] == "M3"]["kwh"] == 0).sum() == 40
    m, r, q = run(tmp_path / "off", ["bad/stuck_meters.csv"], stuck_hours=0)
    assert m["counts"]["rows_quarantined"] == 0 and len(q) == 0


# --- property: malformed CSV never loses a row --------------------------------------------------------------

GRID = [t.strftime("%Y-%m-%d %H:%M:%S") for t in pd.date_range("2023-01-02", periods=96, freq="30min")]
_field_text = st.text(alphabet="ab1.-:, \"'é;\t", max_size=8)
_timestamp = st.one_of(
    st.sampled_from(GRID),
    st.sampled_from(["2023-01-02 00:07:00", "2023-02-30 10:00:00", "yesterday", "", "2023-01-02T00:30:00+01:00"]),
    _field_text,
)
_value = st.one_of(
    st.floats(-10, 300, allow_nan=False).map(lambda v: f"{v:.3f}"),
    st.sampled_from(["", "NaN", "Null", "inf", "-0.4", "1e9", "0", "abc", " 0.25 "]),
    _field_text,
)
_row = st.tuples(st.sampled_from(["M1", "M2", "M3"]) | _field_text, _timestamp, _value, st.integers(-1, 2)).map(
    lambda r: list(r[:3])[: 3 + min(r[3], 0)] + ["x"] * max(r[3], 0)  # -1: a field short, 1-2: extra fields
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(_row, min_size=1, max_size=40))
def test_malformed_csv_rows_in_equal_kept_plus_quarantined(tmp_path_factory, rows):
    """Generated rows with bad fields, bad timestamps, bad values, missing and extra fields: ingest either stops
    with an error naming the file, or accounts for every data line as kept or quarantined."""
    out = tmp_path_factory.mktemp("prop")
    src = out / "meters.csv"
    src.write_text("meter_id,timestamp,kwh\n" + "".join(",".join(r) + "\n" for r in rows), encoding="utf-8")
    cfg = IngestConfig(tz="Europe/Paris")
    try:
        m = ingest([src], out / "store", cfg, reports=out / "reports", validate=False)
    except (InputError, ValueError) as e:
        assert "meters.csv" in str(e) or "no readings" in str(e).lower(), str(e)
        return
    c = m["counts"]
    assert c["rows_in"] == len(rows) == c["rows_kept"] + c["rows_quarantined"], c
    assert len(pd.read_parquet(m["quarantine_file"])) == c["rows_quarantined"]
