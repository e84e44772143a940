import numpy as np
import pandas as pd
import pytest

from energy_btgm.data.curves import CurvesConfig, build, read_groups
from energy_btgm.data.ingest import IngestConfig, ingest
from energy_btgm.data.synth import SynthConfig, generate


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """30 households, 4 weeks over the spring DST change, with export defects, ingested."""
    root = tmp_path_factory.mktemp("curves")
    generate(SynthConfig(households=30, start="2023-03-13", weeks=4, seed=5, defects=True), root / "store" / "raw" / "synthetic")
    ingest(
        [root / "store" / "raw" / "synthetic" / "readings"],
        root / "store",
        IngestConfig(tz="Europe/Paris"),
        reports=root / "reports",
    )
    return root


def make(store, seed=0, **kw):
    cfg = CurvesConfig(group_sizes=(10,), draws=6, seed=seed, **kw)
    return build(store / "store", cfg, reports=store / "reports")


def test_group_curves_lengths_df_admd(store):
    m = make(store)
    g = read_groups(store / "store", 10)
    X = g.attrs["curves_kw"]
    assert X.shape == (4 * 6, 336) and np.isfinite(X).all()
    assert (g["df"] >= 1 - 1e-6).all()
    np.testing.assert_allclose(g["admd_kw"] * 10, X.max(1), rtol=1e-5)
    np.testing.assert_allclose(g["peak_kw"], X.max(1), rtol=1e-6)
    assert g["members"].map(len).eq(10).all() and g["members"].map(lambda m: len(set(m)) == 10).all()
    assert g["temp_c"].notna().all()
    assert m["validation"]["success"]


def test_household_sums_match_group_curves(store):
    make(store)
    import pyarrow.parquet as pq

    hh = pq.read_table(store / "store" / "curves" / "households.parquet").to_pandas()
    g = read_groups(store / "store", 10)
    row = g.iloc[3]
    members = hh[(hh["week_start"] == row["week_start"]) & hh["meter_id"].isin(row["members"])]
    np.testing.assert_allclose(np.stack(members["curve"].to_numpy()).sum(0), g.attrs["curves_kw"][3], rtol=1e-4)
    assert members["peak_kw"].sum() == pytest.approx(row["sum_member_peaks_kw"], rel=1e-4)
    dst_week = hh[hh["week_start"] == pd.Timestamp("2023-03-20")]
    assert dst_week["dst"].all() and len(dst_week) > 0


def test_groups_reproducible_by_seed_and_split_by_week(store):
    make(store, seed=1)
    a = read_groups(store / "store", 10)
    make(store, seed=1)
    b = read_groups(store / "store", 10)
    m = make(store, seed=2)
    c = read_groups(store / "store", 10)
    assert a["members"].map(list).tolist() == b["members"].map(list).tolist()
    assert a["members"].map(list).tolist() != c["members"].map(list).tolist()
    weeks = {s: set(v) for s, v in m["split"].items()}
    assert not (weeks["train"] & weeks["test"]) and not (weeks["train"] & weeks["validation"])
    assert sum(map(len, weeks.values())) == 4
    per_week = c.groupby("week_start")["split"].nunique()
    assert (per_week == 1).all()


def test_household_weeks_with_too_much_missing_are_excluded(store):
    m = make(store, max_missing=0.0)
    assert m["household_weeks_excluded"] > 0  # the defects left filled gaps
    m2 = make(store)
    assert m2["household_weeks_kept"] > m["household_weeks_kept"]


def test_group_size_larger_than_households_is_a_clear_error(store):
    with pytest.raises(ValueError, match="no week has 500 complete households"):
        build(store / "store", CurvesConfig(group_sizes=(500,), draws=2), reports=store / "reports")
