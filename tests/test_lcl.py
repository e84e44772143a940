"""The Low Carbon London files ingest with no edit, on the right clock.

Their timestamps are GMT all year; weekly curves are built on London local time. A wrong zone moves
every summer reading by an hour against the winter ones. Real routines also move with the seasons
(on these files the evening peak is at about 19:00 local in January and 22:00 in July), so the test compares
the weeks on either side of each DST change, where only the clock moves: their mornings (04:00–12:00,
driven by alarm clocks) must line up within half an hour, and they do not when the GMT stamps are
read as London wall-clock time.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TINY

from energy_btgm.data.config import CurvesConfig, IngestConfig
from energy_btgm.data.curves import build, household_curves
from energy_btgm.data.ingest import ingest
from energy_btgm.model import statistics
from energy_btgm.model.card import TARGET_STATISTICS
from energy_btgm.model.config import TrainConfig
from energy_btgm.model.train import train

LCL = Path(__file__).resolve().parents[2] / "shared" / "data" / "lcl-2013"
pytestmark = pytest.mark.skipif(not (LCL / "block_0.csv.gz").exists(), reason=f"the LCL files are not at {LCL}")

# three weeks before and after the 2013 DST changes (31 March, 27 October), Mondays
SPRING = (["2013-03-11", "2013-03-18", "2013-03-25"], ["2013-04-01", "2013-04-08", "2013-04-15"])
AUTUMN = (["2013-10-07", "2013-10-14", "2013-10-21"], ["2013-10-28", "2013-11-04", "2013-11-11"])


def daily_profile(hh: pd.DataFrame, weeks: list[str]) -> np.ndarray:
    """Mean half-hourly load (48,) over the households and days of the given weeks."""
    sel = hh["week_start"].isin(pd.to_datetime(weeks))
    curves = np.stack(hh.loc[sel, "curve"].to_numpy())  # (N, 336)
    return curves.reshape(len(curves), 7, 48).mean((0, 1))  # (N, 7 days, 48 slots) -> (48,)


def morning_lag_h(before: np.ndarray, after: np.ndarray) -> float:
    """Hours by which the morning (04:00–12:00) of ``after`` lags that of ``before``: the shift that best
    aligns the two standardised daily profiles there."""
    za, zb = ((x - x.mean()) / x.std() for x in (before, after))
    morning = slice(8, 24)
    return min(range(-4, 5), key=lambda s: float(((za[morning] - np.roll(zb, -s)[morning]) ** 2).sum())) / 2


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """block_0 (the published layout, gzip, as downloaded) ingested twice: with its zone, and read as local time."""
    out = {}
    for label, cfg in (
        ("gmt", IngestConfig(fmt="lcl", tz="Europe/London", source_tz="UTC")),
        ("as-local", IngestConfig(fmt="lcl", tz="Europe/London")),
    ):
        root = tmp_path_factory.mktemp(label)
        manifest = ingest([LCL / "block_0.csv.gz"], root / "store", cfg, reports=root / "reports", validate=False)
        hh, info = household_curves(root / "store", CurvesConfig())
        out[label] = (manifest, hh, info)
        out[label + "-store"] = root / "store"
    return out


def test_lcl_in_gmt_keeps_every_row_but_stuck_meters_and_needs_no_dst_repair(stores):
    manifest, hh, info = stores["gmt"]
    c = manifest["counts"]
    assert c["rows_in"] == c["rows_kept"] + c["rows_quarantined"] and c["rows_kept"] > 1_000_000
    # the only rows set aside: meters that read 0 for more than a day (off or vacant homes)
    assert set(c["quarantined_by_reason"]) <= {"stuck_zero"} and c["rows_quarantined"] < 0.05 * c["rows_in"]
    assert c["dst_ambiguous_resolved"] == 0 and c["dst_nonexistent_shifted"] == 0
    assert info["tz"] == "Europe/London" and info["points_per_week"] == 336
    assert manifest["config"]["source_tz"] == "UTC"
    # read as London wall-clock time, the same file loses its DST hours: repairs and quarantined duplicates
    wrong = stores["as-local"][0]["counts"]
    assert wrong["dst_nonexistent_shifted"] > 0 and wrong["rows_quarantined"] > 0


@pytest.mark.parametrize("change", [SPRING, AUTUMN], ids=["spring", "autumn"])
def test_mornings_line_up_across_the_dst_change_on_local_time(stores, change):
    before, after = change
    _, hh, _ = stores["gmt"]
    assert abs(morning_lag_h(daily_profile(hh, before), daily_profile(hh, after))) <= 0.5
    _, wrong, _ = stores["as-local"]  # GMT read as local time: the summer side moves by an hour
    assert abs(morning_lag_h(daily_profile(wrong, before), daily_profile(wrong, after))) >= 1.0


def test_source_tz_is_checked():
    with pytest.raises(ValueError, match="--source-tz 'GMT-ish'"):
        IngestConfig(fmt="lcl", tz="Europe/London", source_tz="GMT-ish").validate()


def test_a_model_card_on_london_households(stores, tmp_path):
    """block_0's London weeks, cut into groups of 10, train a tiny model whose card holds every statistic
    against the real test weeks, the training-vs-test baseline and the five targets."""
    store = stores["gmt-store"]
    manifest = build(store, CurvesConfig(group_sizes=(10,), draws=6, seed=0), reports=tmp_path / "reports", validate=False)
    assert manifest["tz"] == "Europe/London"
    out = train(store, TrainConfig(**TINY), out=tmp_path / "m", reports=tmp_path / "reports")
    card = json.loads((out / "card.json").read_text())
    assert card["n_curves"]["test"] >= 30 and card["fitted_statistics"] == list(statistics.names())
    assert set(card["ks"]) == set(statistics.names()) == set(card["train_vs_test"]["ks"])
    assert set(card["targets"]["by_statistic"]) == set(TARGET_STATISTICS)
    # the real weeks reached the card in kW: ten London homes peak at 5-40 kW, their diversity factor is 1.3-5
    assert 5 < card["q99_real"]["weekly-peak"] < 40 and 1.3 < card["q99_real"]["diversity-factor"] < 5
    assert all(0 <= v <= 1 and np.isfinite(v) for v in card["ks"].values())
    html = (out / "card.html").read_text()
    assert "Wednesday" in html or "wednesday-gap" in html
    # what its few test weeks can judge: the same weeks re-split, with the share of splits the data misses by
    noise = card["targets"]["split_noise"]
    assert noise["weeks"] == len(set(manifest["split"]["train"] + manifest["split"]["validation"] + manifest["split"]["test"]))
    assert noise["test_weeks"] == len(manifest["split"]["test"]) and set(noise["missed_share"]) == set(TARGET_STATISTICS)
    assert all(0 <= v <= 1 for row in noise["missed_share"].values() for v in row.values())
    assert set(card["targets"]["missed_where_the_split_can_tell"]) <= set(card["targets"]["missed"])
    assert f"What {noise['test_weeks']} test weeks can judge" in html
    # and how usual the model's count of judged misses is for the data itself, from the re-splits' counts
    counts, k = noise["judged_missed_statistics"]["counts"], len(card["targets"]["missed_where_the_split_can_tell"])
    assert sum(counts) == noise["resplits"] and len(counts) == len(TARGET_STATISTICS) + 1
    assert card["targets"]["data_misses_as_many_share"] == sum(counts[k:]) / noise["resplits"]
    assert f"meet every judged target in {100 * counts[0] / noise['resplits']:.0f} %" in " ".join(html.split())
