"""Bank exports for grid simulators, each loaded by the tool itself: PyPSA, OpenDSS, GridLAB-D, pandapower."""

import re

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pandapower")

from energy_btgm import bank  # noqa: E402
from energy_btgm.errors import ParameterError  # noqa: E402
from energy_btgm.outputs.simulators import export_simulator  # noqa: E402


@pytest.fixture(scope="module")
def bank_file(tiny_model, tmp_path_factory):
    from energy_btgm.model.sample import write_samples
    from energy_btgm.model.vae import load_model

    gen = load_model(tiny_model / "models" / "vae-n10")
    return write_samples(gen, 6, tmp_path_factory.mktemp("sim") / "bank.parquet", seed=3)


@pytest.fixture(scope="module")
def curves(bank_file):
    return bank.read(bank_file).attrs["load_kw"].astype(np.float64)  # (6, 336) kW


def test_pypsa_export_imports_and_runs_a_power_flow(bank_file, curves, tmp_path):
    import pypsa

    out = export_simulator(bank_file, tmp_path / "pypsa", "pypsa", scenarios=3)
    n = pypsa.Network()
    n.import_from_csv_folder(str(out))
    assert list(n.loads.index) == ["s0", "s1", "s2"] and len(n.snapshots) == 336
    assert (
        n.snapshots.tz is None
        and n.snapshots[0] == pd.Timestamp("2024-01-01")
        and n.snapshots[1] == pd.Timestamp("2024-01-01 00:30")
    )
    assert (n.snapshot_weightings.objective == 0.5).all() and (n.snapshot_weightings.generators == 0.5).all()
    np.testing.assert_allclose(n.loads_t.p_set[["s0", "s1", "s2"]].to_numpy(), curves[:3].T * 1e-3, atol=1e-6)  # MW
    n.add("Bus", "feeder", v_nom=0.4)
    n.add("Line", "cable", bus0="bank", bus1="feeder", r=0.01, x=0.005, s_nom=1.0)
    n.loads.loc["s1", "bus"] = "feeder"
    n.add("Generator", "grid", bus="bank", control="Slack")
    r = n.pf(n.snapshots[:4])
    assert r["converged"].all().all()
    to_feeder = n.lines_t.p0["cable"].iloc[:4].to_numpy()  # MW into the cable at the bank's end
    assert np.all(to_feeder > curves[1, :4] * 1e-3 - 1e-6) and np.allclose(to_feeder, curves[1, :4] * 1e-3, rtol=1e-2)  # + losses
    assert (n.buses_t.v_mag_pu["feeder"].iloc[:4] < 1).all()


def test_opendss_export_runs_in_the_opendss_engine(bank_file, curves, tmp_path):
    import opendssdirect as dss

    out = export_simulator(bank_file, tmp_path / "dss", "opendss", scenarios=2)
    text = (out / "loadshapes.dss").read_text()
    assert "New Loadshape.s1 npts=336 minterval=30 mult=(file=s1.csv) UseActual=yes" in text
    dss.Text.Command("clear")
    dss.Text.Command("new circuit.feeder basekv=0.4 pu=1.0 phases=3 bus1=source")
    dss.Text.Command(f"redirect {out / 'loadshapes.dss'}")
    dss.Text.Command("new line.cable bus1=source bus2=home length=0.05 units=km")
    dss.Text.Command("new load.home bus1=home kv=0.4 kw=1 pf=0.95 model=1 daily=s1")
    dss.LoadShape.Name("s1")
    np.testing.assert_allclose(dss.LoadShape.PMult(), curves[1], atol=1e-4)
    dss.Text.Command("set mode=daily stepsize=30m number=1")
    got = []
    for _ in range(6):
        dss.Solution.Solve()
        dss.Circuit.SetActiveElement("Load.home")
        got.append(sum(dss.CktElement.Powers()[0::2]))  # kW over the phases
    np.testing.assert_allclose(got, curves[1, :6], rtol=1e-3)


def test_gridlabd_players_follow_the_format(bank_file, curves, tmp_path):
    out = export_simulator(bank_file, tmp_path / "glm", "gridlabd", scenarios=2)
    lines = (out / "s0.player").read_text().splitlines()
    assert len(lines) == 336
    pattern = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) ([A-Z]{3,5}),(-?\d+\.\d{4})$")
    parsed = [pattern.match(line) for line in lines]
    assert all(parsed), [line for line, m in zip(lines, parsed) if not m][:3]
    stamps = pd.to_datetime([m.group(1) for m in parsed])
    assert stamps[0] == pd.Timestamp("2024-01-01") and (np.diff(stamps.asi8) == 30 * 60 * 10**9).all()
    tz = bank.read(bank_file).attrs["meta"]["tz"]
    assert {m.group(2) for m in parsed} == {pd.Timestamp("2024-01-01", tz=tz).tzname()}
    np.testing.assert_allclose([float(m.group(3)) for m in parsed], curves[0], atol=1e-4)
    with pytest.raises(ParameterError, match="clock change"):
        export_simulator(bank_file, tmp_path / "dst", "gridlabd", week_start="2024-03-25")


def test_pandapower_export_runs_as_a_time_series(bank_file, curves, tmp_path):
    import pandapower as pp
    from pandapower.timeseries import OutputWriter, run_timeseries

    out = export_simulator(bank_file, tmp_path / "pp", "pandapower", scenarios=2, grid="1-LV-rural2--0-sw", growth=2.0)
    net = pp.from_json(str(out / "net.json"))
    assert len(net.controller) == 2 and len(net.sgen) == 0
    df = net.controller.object.iloc[0].data_source.df
    assert len(df) == 2 * 336 and list(df.index[:3]) == [0, 1, 2]
    assert df["scenario_id"].tolist()[335:337] == [0, 1] and str(df["timestamp"].iloc[336]).startswith("2024-01-01 00:00:00")
    ow = OutputWriter(net, time_steps=[0, 337], output_path=None)
    ow.log_variable("res_load", "p_mw")
    ow.log_variable("res_ext_grid", "p_mw")
    run_timeseries(net, time_steps=[0, 337], numba=False, verbose=False)
    loads = ow.output["res_load.p_mw"].sum(1)  # MW per time step
    assert loads[0] == pytest.approx(curves[0, 0] * 2.0 * 1e-3, rel=1e-9) and loads[337] == pytest.approx(
        curves[1, 1] * 2.0 * 1e-3, rel=1e-9
    )
    assert (ow.output["res_ext_grid.p_mw"].sum(1) > loads).all()  # the grid supplies the loads and the losses
    with pytest.raises(ParameterError, match="--format pandapower needs --grid"):
        export_simulator(bank_file, tmp_path / "pp2", "pandapower")
