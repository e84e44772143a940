"""Prefect: the flows on a tiny store, and end to end through a real server and a served deployment."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.listening import LOOPBACK, listening

ROOT = Path(__file__).resolve().parents[1]


def test_library_and_criteria_do_not_import_prefect():
    code = (
        "import sys, energy_btgm.tuning.run, energy_btgm.outputs.report, energy_btgm.estimate.comparison, criteria; "
        "print('prefect' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, timeout: float) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture()
def prefect_env(tmp_path):
    port = _free_port()
    home = tmp_path / "prefect-home"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PYTHONPATH": str(ROOT),
    }
    prefect = str(Path(sys.executable).parent / "prefect")
    server = subprocess.Popen(
        [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=open(tmp_path / "server.log", "w"),
        stderr=subprocess.STDOUT,
    )
    try:
        _wait(f"http://127.0.0.1:{port}/api/health", 90)
        assert listening(server.pid) and {a for a, _ in listening(server.pid)} <= LOOPBACK
        yield env, prefect
    finally:
        _stop(server)


def test_deployment_run_tune_peak_end_to_end(prefect_env, tiny_model, tmp_path):
    env, prefect = prefect_env
    store = tmp_path / "store"
    shutil.copytree(tiny_model, store)
    serve = subprocess.Popen(
        [sys.executable, "-m", "pipelines.serve"],
        cwd=ROOT,
        env=env,
        stdout=open(tmp_path / "serve.log", "w"),
        stderr=subprocess.STDOUT,
    )
    try:
        t0 = time.time()
        while True:  # wait for the deployment to be registered
            r = subprocess.run([prefect, "deployment", "inspect", "btgm-tune/tune-peak"], env=env, capture_output=True, text=True)
            if r.returncode == 0:
                break
            assert time.time() - t0 < 120, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(2)

        def run_deployment(name: str, **params) -> None:
            args = [x for k, v in params.items() for x in ("-p", f"{k}={v}")]
            r = subprocess.run(
                [prefect, "deployment", "run", name, *args, "--watch", "--watch-timeout", "400"],
                env=env,
                capture_output=True,
                text=True,
                timeout=450,
            )
            assert r.returncode == 0 and "Completed" in r.stdout, (
                r.stdout[-2000:] + r.stderr[-2000:] + (tmp_path / "serve.log").read_text()[-3000:]
            )

        reports = tmp_path / "reports"
        run_deployment("btgm-tune/tune-peak", store=store, reports=reports, steps=60, n_bank=300, target_kl=1.0)
        # the grid study on the bank that run just wrote, by its deployment's name
        run_deployment(
            "grid-study/transformer-risk",
            store=store,
            reports=reports,
            group_size=10,
            scenarios=64,
            seconds=2,
            growth=8,
            report="false",
        )
        study = json.loads((tmp_path / "reports" / "grid" / "1-LV-rural2--0-sw-weekly-peak-n10" / "study.json").read_text())
        assert study["config"]["growth"] == 8 and study["bank_study"]["scenarios"] == 64 and study["rejection"]["scenarios"] > 0
        # the serve process listens on nothing beyond loopback
        assert {a for a, _ in listening(serve.pid)} <= LOOPBACK, listening(serve.pid)
        # anyone who reaches the API can pass parameters: paths outside the allowed roots are refused
        for bad in ("/etc", f"{store}/../../.."):
            r = subprocess.run(
                [prefect, "deployment", "run", "btgm-tune/tune-peak", "-p", f"store={bad}", "--watch", "--watch-timeout", "120"],
                env=env,
                capture_output=True,
                text=True,
                timeout=180,
            )
            assert r.returncode != 0 and "Failed" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
        log = (tmp_path / "serve.log").read_text()
        assert "store '/etc' is outside the folders flows may use" in log and "'..' is not allowed" in log, log[-3000:]
    finally:
        _stop(serve)
    summary = json.loads((store / "tuned" / "weekly-peak-n10" / "summary.json").read_text())
    assert Path(summary["bank"]).exists() and (tmp_path / "reports" / "latest" / "index.html").exists()
    r = subprocess.run([prefect, "artifact", "ls"], env=env, capture_output=True, text=True)
    assert "btgm-weekly-peak-n10" in r.stdout and "grid-10-1-lv-rural2--0-sw" in r.stdout, r.stdout


def test_failing_task_fails_the_flow_with_the_library_message(tiny_model, tmp_path):
    from prefect.testing.utilities import prefect_test_harness

    from pipelines.flows import btgm_tune

    with prefect_test_harness():
        state = btgm_tune(
            criterion="no-such-criterion", store=str(tiny_model), reports=str(tmp_path), steps=10, report=False, return_state=True
        )
    assert state.is_failed()
    with pytest.raises(KeyError, match="unknown criterion"):
        state.result()


def test_dask_task_runner_on_a_two_worker_local_cluster(prefect_env, tiny_model, curves_store, tmp_path):
    env, _ = prefect_env
    store = tmp_path / "store"
    shutil.copytree(tiny_model, store)
    # ingestion: households split into 3 partitions, each cleaned as its own task on the cluster
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.run",
            "ingest-meters",
            "--sources",
            str(curves_store / "raw" / "synthetic" / "readings"),
            "--partitions",
            "3",
            "--store",
            str(store),
            "--reports",
            str(tmp_path / "reports"),
            "--task-runner",
            "dask",
            "--workers",
            "2",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    m = json.loads((store / "readings" / "_manifest.json").read_text())
    assert m["partitions"] == 3 and m["balanced"] and m["validation"]["success"]
    assert (r.stdout + r.stderr).count("clean_partition_task") >= 3
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines.run",
            "tune-all",
            "--store",
            str(store),
            "--group-sizes",
            "10",
            "--criteria",
            "weekly-energy",
            "wednesday-mean",
            "--steps",
            "30",
            "--n-bank",
            "100",
            "--task-runner",
            "dask",
            "--workers",
            "2",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = set()  # every address the run and its cluster listen on, polled while it runs
    t0 = time.time()
    while proc.poll() is None and time.time() - t0 < 600:
        seen |= listening(proc.pid)
        time.sleep(0.3)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, out[-3000:]
    assert len(seen) >= 3 and {a for a, _ in seen} <= LOOPBACK, seen  # scheduler, workers, dashboard: loopback only
    for c in ("weekly-energy", "wednesday-mean"):
        assert (store / "tuned" / f"{c}-n10" / "summary.json").exists()
    assert "DaskTaskRunner" in out or "dask" in out.lower()


def test_freshness_keys_follow_the_manifests(tiny_model, tmp_path):
    """scenario-pipeline skips a step when its output records the checksums of its current inputs."""
    from energy_btgm.tuning.run import tune_criterion
    from pipelines.flows import _fresh_model, _fresh_tune, _train_config, _tune_config
    from tests.conftest import TINY

    store = tmp_path / "store"
    shutil.copytree(tiny_model, store)
    shutil.rmtree(store / "tuned", ignore_errors=True)  # other tests may have tuned in the shared store
    tune_criterion(
        store, "weekly-energy", store / "models" / "vae-n10", top_fraction=0.3, seed=0, cfg=_tune_config(10, 0), n_bank=50
    )
    options = {k: v for k, v in TINY.items() if k not in ("group_size", "epochs", "seed")}
    trained = _train_config(10, TINY["epochs"], 0, options)
    tuned = dict(top_fraction=0.3, seed=0, steps=10, n_bank=50)
    assert _fresh_model(store, 10, trained) and _fresh_tune(store, "weekly-energy", 10, **tuned)
    assert not _fresh_tune(store, "wednesday-gap", 10, **tuned)  # never tuned: must run
    # every parameter that changes the output makes it stale (the bug: another top fraction reused the old bank)
    for change in (dict(top_fraction=0.01), dict(seed=1), dict(steps=None), dict(n_bank=51)):
        assert not _fresh_tune(store, "weekly-energy", 10, **{**tuned, **change}), change
    for change in (dict(epochs=TINY["epochs"] + 1), dict(seed=1), dict(options={**options, "stat_weight": 5.0})):
        args = {"epochs": TINY["epochs"], "seed": 0, "options": options, **change}
        assert not _fresh_model(store, 10, _train_config(10, args["epochs"], args["seed"], args["options"])), change
    with open(store / "curves" / "groups-n10.parquet", "ab") as fh:  # the curves changed: the model is stale
        fh.write(b"\0")
    assert not _fresh_model(store, 10, trained)
    (store / "models" / "vae-n10" / "weights.pt").write_bytes(b"retrained")  # a new model: the tune is stale
    assert not _fresh_tune(store, "weekly-energy", 10, **tuned)


def test_curves_are_stale_when_their_parameters_change(curves_store):
    from energy_btgm.data.config import CurvesConfig
    from pipelines.flows import _fresh_curves

    built = CurvesConfig(group_sizes=(10,), draws=40, seed=0)  # as conftest built them
    assert _fresh_curves(curves_store, built)
    for change in (dict(draws=41), dict(seed=1), dict(group_sizes=(10, 100)), dict(max_missing=0.2)):
        assert not _fresh_curves(curves_store, CurvesConfig(**{**vars(built), **change})), change


def stale_steps(kw: dict) -> list[str]:
    """The steps scenario-pipeline would run with parameters ``kw`` (the others at the flow's defaults)."""
    import inspect

    from pipelines.flows import plan, scenario_pipeline

    a = inspect.signature(scenario_pipeline.fn).bind(**kw)
    a.apply_defaults()
    p = a.arguments
    names = ("fmt", "tz", "source_tz", "draws", "epochs", "train_options", "top_fraction", "tune_steps", "n_bank", "seed")
    names += ("compare_levels",)
    runs = plan(
        Path(p["store"]),
        Path(p["reports"]),
        p["sources"],
        p["group_sizes"],
        p["criteria_names"],
        p["compare_seconds"],
        p["reference_samples"],
        **{k: p[k] for k in names},
    )
    return [k for k, v in runs.items() if v]


def test_scenario_pipeline_reruns_exactly_what_is_stale(curves_store, tmp_path, monkeypatch):
    """A tune step fails; the rerun skips ingest, curves and training (outputs untouched) and redoes the rest.
    Then each parameter in turn makes exactly the steps downstream of it stale."""
    from prefect.testing.utilities import prefect_test_harness

    import energy_btgm.tuning.run
    from pipelines.flows import scenario_pipeline
    from tests.conftest import tiny_pipeline

    store = tmp_path / "store"
    kw = tiny_pipeline(curves_store, tmp_path)

    def broken(*a, **k):
        raise RuntimeError("injected tune failure")

    outputs = [
        store / "readings" / "_manifest.json",
        store / "curves" / "groups-n10.parquet",
        store / "models" / "vae-n10" / "weights.pt",
    ]
    with prefect_test_harness():
        with monkeypatch.context() as m:
            m.setattr(energy_btgm.tuning.run, "tune_criterion", broken)
            state = scenario_pipeline(**kw, return_state=True)
        assert state.is_failed()
        with pytest.raises(RuntimeError, match="injected tune failure"):
            state.result()
        assert all(p.exists() for p in outputs) and not (store / "tuned").exists()
        assert json.loads(outputs[0].read_text())["partitions"] == 2
        mtimes = [p.stat().st_mtime_ns for p in outputs]
        again = scenario_pipeline(**kw)
        assert again["skipped"] == ["ingest", "curves", "train vae-n10"]
        assert again["ran"] == ["tune weekly-energy-n10", "compare"]
        assert [p.stat().st_mtime_ns for p in outputs] == mtimes
        assert (store / "tuned" / "weekly-energy-n10" / "summary.json").exists() and Path(again["report"]).exists()
        assert stale_steps(kw) == []  # nothing stale any more
        # every parameter in turn: exactly the steps downstream of it are stale (the plan the flow runs by) ...
        tune, train = ["tune weekly-energy-n10"], ["train vae-n10"]
        options = {**kw["train_options"], "stat_weight": 5.0}
        changes = [
            (dict(tz="Europe/London"), ["ingest", "curves", *train, *tune, "compare"]),
            (dict(source_tz="UTC"), ["ingest", "curves", *train, *tune, "compare"]),
            (dict(draws=41), ["curves", *train, *tune, "compare"]),
            (dict(seed=1), ["curves", *train, *tune, "compare"]),
            (dict(epochs=kw["epochs"] + 1), [*train, *tune, "compare"]),
            (dict(train_options=options), [*train, *tune, "compare"]),
            (dict(top_fraction=0.02), tune),
            (dict(n_bank=201), tune),
            (dict(tune_steps=21), [*tune, "compare"]),  # the comparison's proposal takes the same steps
            (dict(compare_seconds=3.0), ["compare"]),
            (dict(reference_samples=30_000), ["compare"]),
            (dict(compare_levels=[0.99, 0.999]), ["compare"]),
            (dict(criteria_names=["weekly-energy", "wednesday-mean"]), ["tune wednesday-mean-n10"]),
        ]
        for change, expected in changes:
            assert stale_steps({**kw, **change}) == expected, change
        dry = scenario_pipeline(**{**kw, "draws": 41}, dry_run=True)  # the flow's dry run says the same, runs nothing
        assert dry["ran"] == ["curves", *train, *tune, "compare"] and dry["dry_run"]
        assert [p.stat().st_mtime_ns for p in outputs] == mtimes
        # ... and two of them for real: the run does what its plan said, then nothing is stale
        for change, expected in ((dict(n_bank=150), tune), (dict(compare_seconds=1.0), ["compare"])):
            kw = {**kw, **change}
            assert scenario_pipeline(**kw)["ran"] == expected, change
        assert scenario_pipeline(**kw)["ran"] == []
