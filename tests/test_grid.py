"""Grid studies: the batched power flow against pandapower, the allocation rule, failures, errors, the study end to end."""

import json
import re
import subprocess

import numpy as np
import pandas as pd
import pytest

pp = pytest.importorskip("pandapower")

from energy_btgm.errors import ParameterError  # noqa: E402
from energy_btgm.grid.network import GridConfig, allocation, check_fit, injections, load_net, study_net  # noqa: E402
from energy_btgm.grid.powerflow import BatchPowerFlow, runpp_metrics  # noqa: E402
from energy_btgm.grid.study import Study, StudyConfig, when  # noqa: E402

GRID = "1-LV-rural2--0-sw"


@pytest.fixture(scope="module")
def rural():
    """The SimBench rural LV grid, as the study uses it, and its solver."""
    net = study_net(load_net(GRID), GRID)
    return net, BatchPowerFlow(net)


def test_the_grid_is_the_simbench_one_without_generation(rural):
    net, _ = rural
    assert (len(net.bus), len(net.load), len(net.trafo)) == (97, 99, 1) and net.trafo.sn_mva.iloc[0] == 0.25
    assert len(net.sgen) == 0  # a demand study: PV left out
    share = allocation(net)
    assert share.shape == (99,) and share.min() > 0 and abs(share.sum() - 1) < 1e-12
    np.testing.assert_allclose(share, net.load.sn_mva / net.load.sn_mva.sum())


def test_batched_power_flow_matches_pandapower_on_sampled_steps(rural):
    """Voltages within 1e-6 pu and loadings within 1e-4 (percentage points) of pandapower.runpp, on random
    steps from light to beyond the transformer's rating."""
    net, solver = rural
    rng = np.random.default_rng(20261130)
    demand_kw = rng.uniform(20, 320, (1, 400))  # (1, 400): one 'week' of 400 steps
    p, q = injections(demand_kw, allocation(net), GridConfig(power_factor=0.93))
    p, q = p[0], q[0]  # (400, L)
    r = solver.solve(p, q, buses=True)
    assert r["converged"].all()
    for k in rng.choice(400, 8, replace=False):
        ref = runpp_metrics(net, p[k], q[k])
        np.testing.assert_allclose(r["vm_pu"][k], ref["vm_pu"], atol=1e-6, rtol=0)
        for m in ("trafo_loading_pct", "line_loading_pct"):
            assert abs(r[m][k] - ref[m]) < 1e-4, (k, m, r[m][k], ref[m])
        for m in ("vm_min_pu", "vm_max_pu"):
            assert abs(r[m][k] - ref[m]) < 1e-6
    # loading rises with demand under the allocation rule (every load follows the group curve)
    order = np.argsort(demand_kw[0])
    assert (np.diff(r["trafo_loading_pct"][order]) > 0).all()


def test_the_overload_threshold_is_where_pandapower_crosses_the_limit(rural):
    net, _ = rural
    study = Study(StudyConfig(grid=GRID, growth=1.3, trafo_limit=90.0), net=net)
    t = study.peak_threshold_kw(150.0)
    cfg = GridConfig(growth=1.3)
    for kw, above in ((t * 0.999, False), (t * 1.001, True)):
        p, q = injections(np.array([[kw]]), study.share, cfg)
        assert (runpp_metrics(net, p[0, 0], q[0, 0])["trafo_loading_pct"] > 90.0) is above


def test_a_step_that_does_not_converge_is_recorded_and_the_study_goes_on(rural):
    net, _ = rural
    study = Study(StudyConfig(grid=GRID), net=net)
    curves = np.full((3, 336), 60.0)  # kW
    curves[1, 37] = 60_000.0  # 60 MW on a 250 kVA grid: no power flow solution
    weeks = study.weeks(curves, "bank")
    assert weeks["failed_steps"].tolist() == [0, 1, 0]
    assert study.failures == [{"source": "bank", "scenario_id": 1, "step": 37, "time": "Mon 18:30"}]
    assert np.isfinite(weeks[["trafo_loading_pct", "vm_min_pu"]].to_numpy()).all()  # the other 335 steps count
    assert np.allclose(weeks["trafo_loading_pct"], weeks["trafo_loading_pct"][0])


def test_when_reads_a_step_as_people_do():
    assert [when(s, 336) for s in (0, 37, 335)] == ["Mon 00:00", "Mon 18:30", "Sun 23:30"]
    assert when(95, 672) == "Mon 23:45"


def test_a_grid_too_small_for_the_group_is_refused_and_a_small_group_flagged():
    with pytest.raises(ParameterError, match="has 12 loads; a scenario of 100 homes needs at least 25.*--max-homes-per-load"):
        check_fit(12, 100, GridConfig(), "tiny")
    assert "0.10 homes per load" in check_fit(99, 10, GridConfig(), GRID)
    assert check_fit(99, 100, GridConfig(), GRID) is None
    with pytest.raises(ParameterError, match="neither a pandapower JSON file nor a SimBench code.*1-LV-rural2--0-sw"):
        load_net("1-LV-nowhere--0-sw")


def _small_grid(path, loads: int):
    net = pp.create_empty_network()
    hv = pp.create_bus(net, 20.0)
    lv = pp.create_bus(net, 0.4)
    pp.create_ext_grid(net, hv)
    pp.create_transformer(net, hv, lv, "0.25 MVA 20/0.4 kV")
    for i in range(loads):
        b = pp.create_bus(net, 0.4)
        pp.create_line(net, lv, b, 0.1 + 0.02 * i, "NAYY 4x150 SE")
        pp.create_load(net, b, p_mw=0.002, sn_mva=0.003)
    pp.to_json(net, str(path))
    return path


@pytest.fixture(scope="module")
def tuned_bank(tiny_model, tmp_path_factory):
    """A small tuned weekly-peak bank of the tiny 10-home model."""
    import shutil

    from energy_btgm.tuning.engine import TuneConfig
    from energy_btgm.tuning.run import tune_criterion

    store = tmp_path_factory.mktemp("grid") / "store"
    shutil.copytree(tiny_model, store)
    cfg = TuneConfig(steps=40, batch=256, n_norm=4096, n_eval=2048, transforms=2, hidden=32, max_iter=2, tol=0.3, seed=0)
    s = tune_criterion(store, "weekly-peak", store / "models" / "vae-n10", top_fraction=0.05, cfg=cfg, n_bank=400, seed=0)
    return store, s["bank"]


def test_bad_grid_and_bank_inputs_are_clear_errors(tuned_bank, tmp_path, capsys):
    from energy_btgm.cli import main

    store, bank_file = tuned_bank
    small = _small_grid(tmp_path / "small.json", loads=2)
    cases = [
        (["--grid", str(small)], "has 2 loads; a scenario of 10 homes needs at least 3"),
        (
            ["--grid", str(small), "--max-homes-per-load", "5", "--resolution-min", "15"],
            "30-minute resolution and the study expects 15",
        ),
        (["--grid", str(tmp_path / "none.json")], "grid file .*none.json not found"),
        (["--growth", "-1"], "--growth must be a positive factor"),
    ]
    for extra, message in cases:
        assert main(["grid-study", bank_file, "--store", str(store), "--quiet", *extra]) in (1, 2)
        err = capsys.readouterr().err
        assert re.search(message, err), (extra, err)


def test_grid_study_end_to_end_on_a_small_grid(tuned_bank, tmp_path, cli_exe):
    """The CLI runs a study on a user's pandapower file: every week simulated, the estimates, diagnostics and
    figures written, and the proposal used when the bank's weights cannot carry the event."""
    store, bank_file = tuned_bank
    grid = _small_grid(tmp_path / "feeder.json", loads=4)
    out = tmp_path / "study"
    r = subprocess.run(
        [
            cli_exe,
            "grid-study",
            bank_file,
            "--store",
            str(store),
            "--grid",
            str(grid),
            "--scenarios",
            "96",
            "--seconds",
            "4",
            "--growth",
            "9",
            "--max-homes-per-load",
            "3",
            "--out",
            str(out),
            "--quiet",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "P(transformer above 100 %) per week" in r.stdout and "rejection" in r.stdout
    s = json.loads((out / "study.json").read_text())
    weeks = pd.read_parquet(out / "weeks.parquet")
    assert (weeks["source"] == "bank").sum() == 96 == s["bank_study"]["scenarios"]
    assert (weeks["source"] == "rejection").sum() == s["rejection"]["scenarios"] > 0
    assert s["grid_summary"] == {"buses": 6, "loads": 4, "lines": 4, "trafos": 1, "trafo_rating_kva": [250.0]}
    rej = s["rejection"]["estimates"]["trafo_overload"]
    hits = int((weeks.loc[weeks["source"] == "rejection", "trafo_loading_pct"] > 100).sum())
    assert rej["hits"] == hits and rej["p"] == pytest.approx(hits / s["rejection"]["scenarios"])
    for part in (s["bank_study"], s["btgm"]):
        e = part["estimates"]["trafo_overload"]
        assert e["ci"][0] <= e["p"] <= e["ci"][1] and set(e) >= {"ess", "pareto_k", "reliable", "problems"}
    if not s["bank_study"]["reliable"]:
        assert s["btgm"]["method"] == "proposal built for the event" and s["btgm"]["proposal"]["peak_threshold_kw"] > 0
    assert s["config"]["growth"] == 9 and s["bank_sha256"] and s["code_version"]
    assert (out / "loading.png").stat().st_size > 5000 and (out / "worst_weeks.png").stat().st_size > 5000
