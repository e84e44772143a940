import json
import math
import subprocess

import numpy as np
import pyarrow.parquet as pq
import pytest

from energy_btgm.data.curves import read_groups
from energy_btgm.tuning.engine import TuneConfig
from energy_btgm.tuning.run import load_flow, tune_criterion
from energy_btgm.tuning.theory import pareto_efficiency, theory_curve

FAST = TuneConfig(transforms=2, hidden=32, steps=150, batch=256, n_norm=8192, n_eval=8192, max_iter=6)


def test_tune_writes_flow_summary_figures_and_bank(tiny_model):
    store = tiny_model
    s = tune_criterion(store, "wednesday-gap", store / "models" / "vae-n10", top_fraction=0.01, cfg=FAST, n_bank=500)
    for key in ("criterion", "target_kl", "beta", "kl", "mean_f", "mean_f_under_p", "pareto_efficiency", "seconds", "path"):
        assert key in s
    assert s["target_kl"] == pytest.approx(-math.log(0.01))
    assert s["mean_f"] > s["mean_f_under_p"]
    saved = json.loads((store / "tuned" / "wednesday-gap-n10" / "summary.json").read_text())
    assert saved["kl"] == s["kl"] and (store / "tuned" / "wednesday-gap-n10" / "pareto.png").exists()
    flow, ck = load_flow(store / "tuned" / "wednesday-gap-n10")
    assert ck["beta"] == s["beta"]
    t = pq.read_table(s["bank"])
    assert t.num_rows == 500 and set(t.column("source").to_pylist()) == {"btgm"}
    w = t.column("weight").to_numpy()
    assert np.isfinite(w).all() and (w > 0).all()
    np.testing.assert_allclose(w, np.exp(t.column("log_p").to_numpy() - t.column("log_q").to_numpy()), rtol=1e-6)
    assert "criterion=wednesday-gap" in s["bank"] and b"model_sha256" in t.schema.metadata
    units = json.loads(t.schema.metadata[b"units"])  # keyed by column, the criterion's column included
    assert units["wednesday_gap"] == "kW" and units["log_q"] == "nats" and "weight" in units and "admd_kw" in units
    # what the bank is good for, from its weights' ESS and Pareto k̂, in the summary and the bank itself
    d = s["bank_weights"]
    assert d["ess"] == pytest.approx(s["ess_of_bank_weights"]) and d["ess"] <= 500
    assert d["reliable"] == (d["ess"] >= 100 and d["pareto_k"] is not None and d["pareto_k"] <= 0.7)
    meta = {k.decode(): v.decode() for k, v in t.schema.metadata.items()}
    assert meta["good_for"] == d["good_for"] and meta["good_for"].startswith("scenarios to look at")
    assert ("NOT estimates under p" in meta["good_for"]) == (not d["reliable"])
    assert float(meta["weights_ess"]) == pytest.approx(d["ess"], abs=0.1)


def test_a_small_bank_says_it_is_not_for_estimates_under_p(tiny_model, tmp_path):
    """50 scenarios cannot carry an ESS of 100: the bank is for looking at, and says so with the reason."""
    import shutil

    store = tmp_path / "store"
    shutil.copytree(tiny_model, store)
    s = tune_criterion(store, "weekly-energy", store / "models" / "vae-n10", top_fraction=0.1, cfg=FAST, n_bank=50)
    assert not s["bank_weights"]["reliable"] and "NOT estimates under p" in s["bank_weights"]["good_for"]
    assert "ESS" in s["bank_weights"]["good_for"] and "energy-btgm compare" in s["bank_weights"]["good_for"]


def test_minimised_criterion_goes_down(tiny_model):
    s = tune_criterion(tiny_model, "mae-flatness-min", tiny_model / "models" / "vae-n10", target_kl=1.0, cfg=FAST, n_bank=200)
    assert s["mean_f"] < s["mean_f_under_p"] and s["unit"] == "kWh"


def test_theory_points_with_small_ess_are_flagged_not_used():
    rng = np.random.default_rng(0)
    f_p = rng.standard_normal(2000)
    f_q = rng.standard_normal(2000) + 1.0  # proposal N(1, 1): log w = log p − log q = −f + 1/2
    log_w = -f_q + 0.5
    th = theory_curve(f_p, f_q, log_w, np.linspace(0, 8, 17))
    assert (~th["usable"]).any() and th["usable"][0]
    eff, beta_star, mean_star = pareto_efficiency(th, kl_hat=0.5, mean_hat=1.0, mean_p=0.0)
    assert beta_star == pytest.approx(1.0, abs=0.1) and eff == pytest.approx(1.0, abs=0.1)
    eff_far, _, _ = pareto_efficiency(th, kl_hat=1e6, mean_hat=1.0, mean_p=0.0)
    assert math.isnan(eff_far)  # beyond usable theory: no number rather than a wrong one


def test_tune_and_assess_cli(tiny_model, cli_exe, tmp_path):
    r = subprocess.run([cli_exe, "tune", "no-such-criterion", "--store", str(tiny_model)], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown criterion" in r.stderr
    r = subprocess.run([cli_exe, "tune", "weekly-peak", "--store", str(tmp_path / "empty")], capture_output=True, text=True)
    assert r.returncode == 1 and "energy-btgm train" in r.stderr
    # --model wins over --group-size, and the output folder is named by the model's own group size
    r = subprocess.run(
        [
            cli_exe,
            "assess",
            "weekly-peak",
            "--store",
            str(tiny_model),
            "--reports",
            str(tmp_path),
            "-n",
            "500",
            "--model",
            str(tiny_model / "models" / "vae-n10"),
            "--group-size",
            "100",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "recommended" in r.stdout and (tmp_path / "assess" / "weekly-peak-n10" / "gradients.png").exists()
    a = json.loads((tmp_path / "assess" / "weekly-peak-n10" / "assess.json").read_text())
    assert set(a["variants"]) == {"hard max", "smooth max (τ=0.25 kW)", "log of peak", "log of smooth max"}
    assert a["recommended"] in a["variants"]


def test_report_is_self_contained_and_matches_summary(tiny_model, tmp_path, cli_exe):
    import re

    tune_criterion(tiny_model, "weekly-peak", tiny_model / "models" / "vae-n10", top_fraction=0.01, cfg=FAST, n_bank=300)
    r = subprocess.run(
        [cli_exe, "report", "--store", str(tiny_model), "--reports", str(tmp_path), "--run", "r1"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "r1" / "index.html").read_text()
    summary = json.loads((tmp_path / "r1" / "summary.json").read_text())
    srcs = re.findall(r'<img[^>]*src="([^"]+)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)  # no external files, no broken links
    assert all(re.search(r'<img alt="[^"]+"', tag) for tag in re.findall(r"<img[^>]*>", page))
    t = summary["tuned"]["weekly-peak-n10"]
    assert f"{t['pareto_efficiency']:.4g}" in page and f"{t['beta']:.4g}" in page
    assert "report:" in r.stdout and "weekly-peak-n10" in r.stdout
    # the tuned bank beside the real held-out weeks with the highest weekly peak (issue 18)
    assert 'alt="the tuned bank for weekly-peak beside the real weeks' in page
    test_peaks = np.sort(read_groups(tiny_model, 10, split="test").attrs["curves_kw"].max(1))[::-1]
    assert t["extremes"]["real_top"] == pytest.approx(test_peaks[:5].tolist(), rel=1e-5)
    assert t["extremes"]["real_test_weeks"] == len(test_peaks)
