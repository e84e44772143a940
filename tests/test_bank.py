import json
import subprocess

import numpy as np
import pandas as pd
import pytest

from energy_btgm import bank
from energy_btgm.model.sample import write_samples
from energy_btgm.model.vae import load_model
from energy_btgm.store import sha256_file


@pytest.fixture()
def sample_bank(tiny_model, tmp_path):
    gen = load_model(tiny_model / "models" / "vae-n10")
    return write_samples(gen, 20, tmp_path / "bank.parquet", seed=1), gen


def test_read_checks_metadata_and_model(sample_bank, tmp_path):
    path, gen = sample_bank
    df = bank.read(path, expect_model_sha256=sha256_file(gen.path / "weights.pt"))
    assert len(df) == 20 and df.attrs["load_kw"].shape == (20, 336) and df.attrs["meta"]["time_resolution_min"] == "30"
    with pytest.raises(ValueError, match="another model version.*energy-btgm tune"):
        bank.read(path, expect_model_sha256="0" * 64)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(ValueError, match="corrupted or truncated"):
        bank.read(broken)
    with pytest.raises(FileNotFoundError, match="energy-btgm tune"):
        bank.read(tmp_path / "nothing-here")


def test_every_numeric_column_carries_its_unit(sample_bank):
    """One writer for every bank: the metadata names the unit of each numeric column, by column name."""
    path, _ = sample_bank
    df = bank.read(path)
    units = json.loads(df.attrs["meta"]["units"])
    numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) and c != "scenario_id"]
    assert set(numeric) | {"load_kw"} == set(units)
    assert units["load_kw"] == "kW" and units["energy_kwh"] == "kWh" and units["df"] == "1" and units["admd_kw"] == "kW"
    assert units["weekly_peak"] == "kW" and units["mae_flatness"] == "kWh" and units["log_p"] == "nats"


def test_the_bank_says_what_it_is_and_read_checks_its_version(sample_bank, tmp_path):
    """Schema version, the meters' time zone, the week convention, the resolution and the weight
    semantics travel with the bank; a bank of another schema version is refused with the fix."""
    import pyarrow.parquet as pq

    path, gen = sample_bank
    meta = bank.read(path).attrs["meta"]
    assert meta["schema_version"] == bank.SCHEMA_VERSION and meta["tz"] == gen.meta["tz"] != "unknown"
    assert meta["week_convention"].startswith("Monday 00:00 local") and meta["time_resolution_min"] == "30"
    assert set(json.loads(meta["semantics"])) == {"log_p"}  # a bank of p: no weight, no log_q
    t = pq.read_table(path)
    for version, shown in ((None, r"1 \(before versions\)"), (b"1", "1"), (b"3", "3")):
        md = {k: v for k, v in t.schema.metadata.items() if k != b"schema_version"}
        if version:
            md[b"schema_version"] = version
        pq.write_table(t.replace_schema_metadata(md), tmp_path / "other.parquet")
        with pytest.raises(ValueError, match=f"schema version {shown}; .*reads version 2.*energy-btgm tune"):
            bank.read(tmp_path / "other.parquet")


def test_a_column_without_a_unit_is_refused():
    import pyarrow as pa

    X = np.random.default_rng(0).uniform(1, 5, (3, 336))
    table = bank.curves_table(X, X.max(1) * 3, 10).append_column("mystery", pa.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="'mystery' has no unit"):
        bank.units_of(table)


@pytest.mark.parametrize("fmt", ["long-csv", "wide-csv", "long-parquet"])
def test_export_formats_load_in_pandas(sample_bank, tmp_path, cli_exe, fmt):
    path, _ = sample_bank
    out = tmp_path / f"out.{fmt}"
    r = subprocess.run([cli_exe, "export", str(path), "--format", fmt, "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    X = bank.read(path).attrs["load_kw"]
    if fmt == "wide-csv":
        t = pd.read_csv(out, index_col="timestamp", parse_dates=True)
        assert t.shape == (336, 20)
        np.testing.assert_allclose(t.iloc[:, 3].to_numpy(), X[3], atol=1e-3)
    else:
        t = pd.read_csv(out, parse_dates=["timestamp"]) if fmt == "long-csv" else pd.read_parquet(out)
        assert list(t.columns) == ["scenario_id", "timestamp", "load_kw"] and len(t) == 20 * 336
        first = t[t["scenario_id"] == t["scenario_id"].iloc[0]]
        assert first["timestamp"].iloc[0] == pd.Timestamp("2024-01-01") and first["timestamp"].diff().iloc[1] == pd.Timedelta(
            "30min"
        )
        np.testing.assert_allclose(first["load_kw"].to_numpy(), X[0], atol=1e-3)


def test_bank_suite_rejects_a_bad_bank():
    X = np.random.default_rng(0).uniform(1, 5, (6, 336))
    good = bank.curves_table(X, X.max(1) * 3, 10)
    assert bank.validate(good)["success"]
    X[2, 7] = np.nan
    with pytest.raises(ValueError, match="bank-v1.*curve_finite"):
        bank.validate(bank.curves_table(X, np.full(6, 30.0), 10))
