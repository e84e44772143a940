import dataclasses
import json
import re
import subprocess

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from conftest import TINY

import criteria
from energy_btgm.model.card import TARGET_STATISTICS, write_card
from energy_btgm.model.train import TrainConfig, TrainingError, load_splits, train
from energy_btgm.model.vae import load_model


@pytest.fixture()
def store(curves_store):
    return curves_store


def weights(path):
    return torch.load(path / "weights.pt", weights_only=True)


def test_killed_run_resumes_to_the_same_weights(store, tmp_path):
    cfg = TrainConfig(**TINY, prior_transforms=2)  # the latent prior flow, fitted after the epochs, too
    full = train(store, cfg, out=tmp_path / "full", card=False)
    with pytest.raises(KeyboardInterrupt):
        train(store, cfg, out=tmp_path / "resumed", card=False, stop_after_epoch=2)
    assert (tmp_path / ".resumed.training" / "checkpoint.pt").exists() and not (tmp_path / "resumed").exists()
    resumed = train(store, cfg, out=tmp_path / "resumed", card=False, resume=True)
    a, b = weights(full), weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    u = torch.randn(8, 4)
    assert not torch.allclose(load_model(full).vae.prior(u)[0], u, atol=1e-3)  # fitted: no longer the identity
    h = json.loads((resumed / "history.json").read_text())
    assert [e["epoch"] for e in h] == [1, 2, 3, 4]
    other = train(store, dataclasses.replace(cfg, seed=1), out=tmp_path / "other", card=False)
    assert not torch.equal(weights(other)["obs_logvar"], a["obs_logvar"])


def test_model_directory_and_card(store, tmp_path):
    out = train(store, TrainConfig(**TINY), out=tmp_path / "m")
    for f in ("weights.pt", "model.json", "history.json", "card.json", "card.html"):
        assert (out / f).exists(), f
    card = json.loads((out / "card.json").read_text())
    names = {*criteria.REGISTRY, "diversity-factor"} - {"mae-flatness-min"}  # every statistic, once
    assert set(card["ks"]) == names and set(card["q99_rel_err"]) == names and set(card["q999_rel_err"]) == names
    t = card["targets"]
    assert set(t["by_statistic"]) == set(TARGET_STATISTICS) and t["met"] == (not t["missed"])
    assert all("q999" not in row for row in t["by_statistic"].values())  # a tiny test split: no q0.999 target
    assert all(0 <= v <= 1 for v in card["ks"].values()) and np.isfinite(card["test_elbo"])
    assert set(card["train_vs_test"]["ks"]) == names and all(0 <= v <= 1 for v in card["train_vs_test"]["ks"].values())
    learnt = card["generated_vs_train"]  # in sample: against the training curves, not the test ones
    assert set(learnt["ks"]) == names and learnt["ks"] != card["ks"] and learnt["ks"] != card["train_vs_test"]["ks"]
    tw = card["tail_weeks"]  # the distinct weeks behind each split's tails: at least one, at most the split's weeks
    assert set(tw) == {"train", "test"} and set(tw["test"]) == set(TARGET_STATISTICS)
    assert all(1 <= row["q999"] <= row["q99"] <= card["targets"]["split_noise"]["weeks"] for row in tw["train"].values())
    worst = learnt["worst"]["ks"]
    assert worst["value"] == max(learnt["ks"][n] for n in TARGET_STATISTICS) == learnt["ks"][worst["statistic"]]
    page = (out / "card.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "Model card" in page
    meta = json.loads((out / "model.json").read_text())
    assert meta["curves_sha256"] and meta["train_config"]["seed"] == 0 and meta["scaler"]["mean"]
    gen = load_model(out)
    curves, peaks, z = gen.sample(7, seed=3)
    assert curves.shape == (7, 336) and peaks.shape == (7,) and z.shape == (7, 4)
    # a model trained before the prior's standard errors were recorded is carded again without them
    with_se = re.compile(r"h = 0: -?[0-9.]+ \(± ")  # each h's validation NLL with its standard error
    assert len(meta["prior_fit"]["prior_val_nll"]) > 1 and with_se.search(page)
    del meta["prior_fit"]["prior_val_nll_se"]
    (out / "model.json").write_text(json.dumps(meta))
    write_card(out, *load_splits(store, TINY["group_size"]))
    page = (out / "card.html").read_text()
    assert re.search(r"h = 0: -?[0-9.]+; h = ", page) and not with_se.search(page)
    # without the curves' weeks the card leaves out what needs them (the split's noise, the weeks behind the tails)
    data, _ = load_splits(store, TINY["group_size"])
    bare = write_card(out, data)
    page = (out / "card.html").read_text()
    assert "tail_weeks" not in bare and "split_noise" not in bare["targets"] and bare["ks"] == card["ks"]
    assert "weeks behind the tail" not in page and "test weeks can judge" not in page and "in sample" in page


def test_load_errors_name_the_problem(store, tmp_path):
    out = train(store, TrainConfig(**TINY), out=tmp_path / "m", card=False)
    (out / "weights.pt").rename(out / "w.bak")
    with pytest.raises(FileNotFoundError, match="weights.pt is missing"):
        load_model(out)
    (out / "w.bak").rename(out / "weights.pt")
    doc = json.loads((out / "model.json").read_text())
    doc["vae_config"]["hidden"] = 32
    (out / "model.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="does not match the config"):
        load_model(out)
    with pytest.raises(FileNotFoundError, match="energy-btgm train"):
        load_model(tmp_path / "nope")


def test_diverging_loss_stops_with_last_good_checkpoint(store, tmp_path, monkeypatch):
    from energy_btgm.model import vae as model_mod

    real_loss, calls = model_mod.VAE.loss, {"n": 0}

    def flaky(self, x, kl_weight=1.0, generator=None, **kw):
        calls["n"] += 1
        loss, nll, kl = real_loss(self, x, kl_weight, generator, **kw)
        return (loss * float("nan"), nll, kl) if self.training and calls["n"] > 12 else (loss, nll, kl)

    monkeypatch.setattr(model_mod.VAE, "loss", flaky)
    with pytest.raises(TrainingError, match="diverged.*last good checkpoint"):
        train(store, TrainConfig(**TINY), out=tmp_path / "d", card=False)
    ck = torch.load(tmp_path / ".d.training" / "checkpoint.pt", weights_only=True)  # plain data: no unpickling needed
    assert ck["state"]["epoch"] >= 1 and not (tmp_path / "d").exists()


def test_bad_curves_are_clear_errors(store, tmp_path):
    import pyarrow as pa
    import pyarrow.compute as pc

    t = pq.read_table(store / "curves" / "groups-n10.parquet")
    bad = tmp_path / "bad"
    bad.mkdir()
    col = t.column("sum_member_peaks_kw").to_numpy().copy()
    col[5] = np.nan
    pq.write_table(
        t.set_column(t.schema.get_field_index("sum_member_peaks_kw"), "sum_member_peaks_kw", pa.array(col)),
        bad / "groups-n10.parquet",
    )
    with pytest.raises(ValueError, match="NaN or inf"):
        train(store, TrainConfig(**TINY), out=tmp_path / "x", curves_dir=bad)
    small = tmp_path / "small"
    small.mkdir()
    pq.write_table(t.filter(pc.less(t.column("draw"), 3)), small / "groups-n10.parquet")
    with pytest.raises(ValueError, match="need at least 64"):
        train(store, TrainConfig(**TINY), out=tmp_path / "x", curves_dir=small)


def test_sample_cli_writes_bank_columns(store, tmp_path, cli_exe):
    train(store, TrainConfig(**TINY), card=False)
    out = tmp_path / "s.parquet"
    r = subprocess.run([cli_exe, "sample", "--store", str(store), "-n", "50", "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    t = pq.read_table(out)
    assert t.num_rows == 50 and t.schema.field("load_kw").type.list_size == 336
    for c in ("scenario_id", "peak_kw", "energy_kwh", "sum_member_peaks_kw", "df", "admd_kw", "log_p", "weekly_peak"):
        assert c in t.column_names
    assert b"model_sha256" in t.schema.metadata
    np.testing.assert_allclose(
        t.column("peak_kw").to_numpy(), np.stack(t.column("load_kw").to_numpy(zero_copy_only=False)).max(1), rtol=1e-6
    )
    r = subprocess.run([cli_exe, "sample", "--store", str(tmp_path / "empty")], capture_output=True, text=True)
    assert r.returncode == 1 and "energy-btgm train --group-size 10" in r.stderr


def test_targets_check_every_statistic_and_name_what_misses():
    from energy_btgm.model.card import check_targets, describe_miss

    stats = list(TARGET_STATISTICS)
    fit = {
        "ks": dict.fromkeys(stats, 0.05),
        "q99_rel_err": dict.fromkeys(stats, 0.01),
        "q999_rel_err": dict.fromkeys(stats, 0.02),
    }
    assert check_targets(fit, n_test=5000)["met"]
    fit["ks"]["mae-flatness"], fit["q999_rel_err"]["diversity-factor"] = 0.3, -0.2
    few, many = check_targets(fit, n_test=500), check_targets(fit, n_test=5000)
    assert few["missed"] == ["mae-flatness"]  # q0.999 is not held to with under 1,000 test curves
    assert many["missed"] == ["mae-flatness", "diversity-factor"] and not many["met"]
    assert describe_miss(fit, many) == "mae-flatness (KS 0.300); diversity-factor (q0.999 -20.0%)"


def _weekly_statistics(week_sd: float, curve_sd: float, weeks: int = 156, per_week: int = 67, seed: int = 0):
    """Every target statistic of weeks × per_week curves: a week effect of sd ``week_sd`` plus a curve's own sd."""
    rng = np.random.default_rng(seed)
    week = np.repeat(np.arange(weeks), per_week)
    stats = {name: 10 + rng.normal(0, week_sd, weeks)[week] + rng.normal(0, curve_sd, len(week)) for name in TARGET_STATISTICS}
    return stats, week


def test_tail_weeks_count_the_weeks_a_tail_rests_on():
    """156 weeks of 67 curves: curves independent of their week spread their top 1 % (105 curves) over many weeks;
    curves that are their week's (as 100-home curves are its weather) hold it in the 2 weeks those 105 curves fill."""
    from energy_btgm.model.card import tail_weeks

    stats, week = _weekly_statistics(week_sd=0.0, curve_sd=1.0)
    free = tail_weeks(stats, week)
    assert set(free) == set(TARGET_STATISTICS)
    assert all(row["q99"] >= 50 and row["q999"] >= 9 for row in free.values())  # about 76 and 11 expected
    stats, week = _weekly_statistics(week_sd=1.0, curve_sd=0.01)
    assert all(row == {"q99": 2, "q999": 1} for row in tail_weeks(stats, week).values())


def test_split_noise_tells_which_targets_the_test_weeks_can_judge():
    """Curves independent of their week: 22 test weeks of 67 curves judge every target (the data never misses it
    against itself). Curves that are mostly their week's (as 100-home curves are its weather): 22 weeks are 22
    values, and the data misses KS ≤ 0.08 against itself in most re-splits (but for the weekly energy the split is
    stratified by), so the card may not hold a model to it."""
    from energy_btgm.model.card import CANNOT_TELL_SHARE, as_often_as_the_data, judged_misses, split_noise

    stats, week = _weekly_statistics(week_sd=0.0, curve_sd=1.0)
    free = split_noise(stats, week, n_test_weeks=22, resplits=40)
    assert free["weeks"] == 156 and free["test_weeks"] == 22 and free["resplits"] == 40
    assert free["cannot_tell"] == {}
    assert all(share <= 0.05 for row in free["missed_share"].values() for share in row.values())
    # every target judged: a re-split meets them all unless one misses, and the per-target shares bound how often
    jm = free["judged_missed_statistics"]
    assert sum(jm["counts"]) == 40 and jm["all_met_share"] == free["strict_all_met_share"]
    worst = max(share for row in free["missed_share"].values() for share in row.values())
    assert 1 - jm["all_met_share"] >= worst

    stats, week = _weekly_statistics(week_sd=1.0, curve_sd=0.01)
    clustered = split_noise(stats, week, n_test_weeks=22, resplits=40)
    others = [name for name in TARGET_STATISTICS if name != "weekly-energy"]
    assert all(clustered["missed_share"][name]["ks"] >= CANNOT_TELL_SHARE for name in others)
    assert all("ks" in clustered["cannot_tell"][name] for name in others)
    # the split is stratified by weekly energy: its test weeks span the energies, so energy's KS stays judged
    assert clustered["missed_share"]["weekly-energy"]["ks"] <= 0.05
    # the unjudged misses do not count against the data: it meets the judged targets in some re-splits, all in none
    jm = clustered["judged_missed_statistics"]
    assert sum(jm["counts"]) == 40 and jm["mean"] == sum(k * c for k, c in enumerate(jm["counts"])) / 40
    assert clustered["strict_all_met_share"] == 0.0 < jm["all_met_share"]
    # how often the data misses judged targets on at least k statistics, from the counts per re-split
    noise = {"judged_missed_statistics": {"counts": [5, 3, 2, 0, 0, 0]}}
    assert [as_often_as_the_data(k, noise) for k in range(4)] == [1.0, 0.5, 0.2, 0.0]

    # a model that misses only a target the split cannot judge is held to the rest, and meets them
    check = {
        "missed": ["weekly-peak", "wednesday-gap"],
        "by_statistic": {
            "weekly-peak": {"ks": False, "q99": True, "met": False},
            "wednesday-gap": {"ks": False, "q99": False, "met": False},
        },
    }
    noise = {"cannot_tell": {"weekly-peak": ["ks"], "wednesday-gap": ["ks"]}}
    assert judged_misses(check, noise) == ["wednesday-gap"]
