"""A full disk, a read-only location, a second run on the same store, and numbers that diverge: each stops with
a clear message naming the path or quantity, and never leaves a partial or non-finite output behind."""

from __future__ import annotations

import errno
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from energy_btgm import bank, store
from energy_btgm.errors import StoreBusy, TuningError, WriteError

# --- disk full and permissions --------------------------------------------------------------------


def _tree(root: Path) -> dict[str, str]:
    """Checksums of every file under ``root``, hidden ones included (a leftover temp file shows)."""
    return {str(p.relative_to(root)): store.sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _limit_file_size(limit: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_disk_names_the_path_and_leaves_the_previous_output(cli_exe, curves_store, tmp_path):
    """`curves` rebuilt where every file may hold at most 8 kB: exit 1, one line naming the folder, old curves intact."""
    s = tmp_path / "store"
    shutil.copytree(curves_store, s)
    before = _tree(s / "curves")
    r = subprocess.run(
        [cli_exe, "curves", "--store", str(s), "--reports", str(tmp_path / "reports"), "--group-sizes", "10", "--draws", "40"],
        capture_output=True,
        text=True,
        preexec_fn=_limit_file_size(8192),
    )
    assert r.returncode == 1, r.stderr[-2000:]
    msg = r.stderr.strip().splitlines()[-1]
    assert "is full" in msg and str(s / "curves") in msg and "untouched" in msg and "Traceback" not in r.stderr, r.stderr
    assert _tree(s / "curves") == before
    assert not [p for p in s.iterdir() if p.name.startswith(".curves")]  # no temporary folder left


def test_an_injected_enospc_in_every_writer_leaves_the_old_file(tmp_path, monkeypatch):
    """The same through the writers' code path: ENOSPC on write, EACCES and EROFS on create."""
    dest = tmp_path / "out" / "compare.json"
    store.atomic_write_json(dest, {"x": 1.0})
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.fh.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store.os, "fdopen", lambda fd, mode: FullDisk(real_fdopen(fd, mode)))
    with pytest.raises(WriteError, match=f"the disk holding {dest} is full.*untouched"):
        store.atomic_write_json(dest, {"x": 2.0})
    monkeypatch.undo()
    for code in (errno.EACCES, errno.EROFS):

        def refuse(*a, code=code, **k):
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(store.tempfile, "mkstemp", refuse)
        monkeypatch.setattr(store.tempfile, "mkdtemp", refuse)
        with pytest.raises(WriteError, match=f"cannot write {dest}: .*read-only or forbidden"):
            store.atomic_write_json(dest, {"x": 3.0})
        with pytest.raises(WriteError, match=f"cannot write {tmp_path / 'out'}"):
            with store.atomic_dir(tmp_path / "out", overwrite=True):
                pass
        monkeypatch.undo()
    assert json.loads(dest.read_text()) == {"x": 1.0} and [p.name for p in dest.parent.iterdir()] == ["compare.json"]


def _immutable(path: Path, on: bool) -> bool:
    r = subprocess.run(["chattr", "+i" if on else "-i", str(path)], capture_output=True)
    return r.returncode == 0


def test_a_read_only_reports_folder_names_the_path(cli_exe, tiny_model, tmp_path):
    """A reports folder nobody may write into (immutable, so root too): exit 1 naming it; the old report stays."""
    reports = tmp_path / "reports"
    r = subprocess.run([cli_exe, "report", "--store", str(tiny_model), "--reports", str(reports)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    before = _tree(reports)
    if shutil.which("chattr") is None or not _immutable(reports, True):
        pytest.skip("chattr +i is not available on this file system; the injected EACCES test covers the message")
    try:
        r = subprocess.run(
            [cli_exe, "report", "--store", str(tiny_model), "--reports", str(reports)], capture_output=True, text=True
        )
    finally:
        _immutable(reports, False)
    assert r.returncode == 1 and f"cannot write {reports / 'latest'}" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert _tree(reports) == before


# --- concurrency -------------------------------------------------------------------------------------

HOLD = """
import sys, time
from energy_btgm.store import store_lock
with store_lock(sys.argv[1], run_id="run-A", command="energy-btgm train"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_a_second_command_on_a_busy_store_stops_with_who_holds_it(cli_exe, tiny_model, tmp_path):
    s = tmp_path / "store"
    shutil.copytree(tiny_model, s)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(s), "60"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.time()
        r = subprocess.run(
            [cli_exe, "report", "--store", str(s), "--reports", str(tmp_path / "r")], capture_output=True, text=True
        )
        assert time.time() - t0 < 30  # refused at once, not after waiting
        assert r.returncode == 1 and "busy since" in r.stderr and "run id run-A" in r.stderr, r.stderr
        assert f"pid {holder.pid}" in r.stderr and not (tmp_path / "r" / "latest").exists()
        with pytest.raises(StoreBusy, match="energy-btgm train"):
            with store.store_lock(s):
                pass
    finally:
        holder.kill()
        holder.wait()
    # killed holder: the system released its lock; the store is usable at once
    with store.store_lock(s, run_id="run-B"):
        with store.store_lock(s):  # re-entrant in one process (a flow's steps)
            pass


RUN = """
import json, sys, time
from pathlib import Path
from prefect.testing.utilities import prefect_test_harness
from pipelines.flows import scenario_pipeline
with prefect_test_harness(server_startup_timeout=120):
    if len(sys.argv) > 2:  # the second run starts the moment the first holds the store, whatever the speeds
        lock, t0 = Path(sys.argv[2]), time.time()
        while not (lock.exists() and lock.read_text()) and time.time() - t0 < 300:
            time.sleep(0.05)
    print("RESULT", json.dumps(scenario_pipeline(**json.loads(sys.argv[1]))), flush=True)
"""


def test_two_scenario_pipelines_on_one_store_never_interleave(curves_store, tmp_path):
    """Two scenario-pipeline runs at once: the first runs to the end, the second stops on the lock with the
    first's flow-run id; the bank a reader finds is complete."""
    from tests.conftest import tiny_pipeline

    s = tmp_path / "store"
    kw = tiny_pipeline(curves_store, tmp_path, partitions=1, n_bank=100, compare_seconds=1.0)
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-a"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-c", RUN, json.dumps(kw)]
    out = dict(cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    a = subprocess.Popen(cmd, env=env, **out)
    b = subprocess.Popen([*cmd, str(s / ".lock")], env={**env, "PREFECT_HOME": str(tmp_path / "prefect-b")}, **out)
    t0 = time.time()
    while not ((s / ".lock").exists() and (s / ".lock").read_text()) and a.poll() is None:
        assert time.time() - t0 < 180, "the first run never took the lock"
        time.sleep(0.2)
    holder = json.loads((s / ".lock").read_text())
    out_b = b.communicate(timeout=600)[0]
    out_a = a.communicate(timeout=600)[0]
    assert a.returncode == 0, out_a[-3000:]
    assert b.returncode != 0 and "busy since" in out_b and holder["run_id"] in out_b, out_b[-3000:]
    summary = json.loads((s / "tuned" / "weekly-energy-n10" / "summary.json").read_text())
    assert bank.read(summary["bank"]).shape[0] == 100
    assert json.loads(out_a.split("RESULT", 1)[1].splitlines()[0])["ran"][:3] == ["ingest", "curves", "train vae-n10"]


# --- numbers that diverge ---------------------------------------------------------------------------------


def test_no_writer_lets_nan_or_inf_through(sample_table, tmp_path):
    table, kw = sample_table
    bank.write(table, tmp_path / "ok.parquet", **kw)
    for column, row in (("peak_kw", 3), ("weight", 0), ("load_kw", 7)):
        bad = _poison(table, column, row)
        with pytest.raises(ValueError, match=f"column '{column}' is NaN or infinite in 1 of 10 rows \\(first: row {row}\\)"):
            bank.write(bad, tmp_path / f"{column}.parquet", **kw)
        assert not (tmp_path / f"{column}.parquet").exists()
    with pytest.raises(ValueError, match=r"not a finite number at levels.0\.99.btgm.exceedance, bulk\[1\]"):
        store.atomic_write_json(
            tmp_path / "c.json", {"levels": {"0.99": {"btgm": {"exceedance": math.nan}}}, "bulk": [1.0, math.inf]}
        )
    assert not (tmp_path / "c.json").exists()


@pytest.fixture()
def sample_table(tiny_model):
    from energy_btgm.model.vae import load_model

    gen = load_model(tiny_model / "models" / "vae-n10")
    curves, peaks, z = gen.sample(10, seed=0)
    t = bank.curves_table(curves, peaks, 10, z).append_column("weight", pa.array(np.ones(10)))
    return t, dict(model=gen.path, model_sha256="0" * 64, seed=0, tz="Europe/Paris", source="test")


def _poison(table: pa.Table, column: str, row: int) -> pa.Table:
    i = table.column_names.index(column)
    col = table.column(column).combine_chunks()
    if pa.types.is_fixed_size_list(col.type):
        v = col.flatten().to_numpy(zero_copy_only=False).copy()
        v[row * col.type.list_size + 5] = np.nan
        new = pa.FixedSizeListArray.from_arrays(pa.array(v), col.type.list_size)
    else:
        v = col.to_numpy(zero_copy_only=False).copy()
        v[row] = np.inf
        new = pa.array(v)
    return table.set_column(i, column, new)


def test_a_report_with_a_nan_is_refused_before_anything_is_written(tiny_model, tmp_path, monkeypatch):
    from energy_btgm.outputs import report

    real = report._models

    def with_nan(store_, summary):
        out = real(store_, summary)
        summary.setdefault("models", {})["poisoned"] = {"ks": math.nan}
        return out

    monkeypatch.setattr(report, "_models", with_nan)
    with pytest.raises(ValueError, match="not a finite number at models.poisoned.ks"):
        report.build(tiny_model, tmp_path / "reports")
    assert not (tmp_path / "reports" / "latest").exists()


class _Explode(torch.autograd.Function):
    """Identity forward; an infinite gradient wherever the curve's mean load passes 3.5 kW."""

    @staticmethod
    def forward(ctx, m):
        ctx.save_for_backward(m)
        return m

    @staticmethod
    def backward(ctx, g):
        (m,) = ctx.saved_tensors
        return torch.where(m > 3.5, torch.full_like(g, math.inf), g)


def exploding(x: torch.Tensor) -> torch.Tensor:
    """Mean load [kW] whose gradient explodes above 3.5 kW (curves of 10 homes; the check's test curves stay below)."""
    return _Explode.apply(x.mean(-1))


def constant(x: torch.Tensor) -> torch.Tensor:
    """Mean load capped at 2 kW: it varies on the check's test curves (mean about 1.7 kW), so the check lets it
    through, and is constant on weeks of 10 homes (mean load above 2 kW)."""
    return x.mean(-1).clamp(max=2.0)


FAST = dict(transforms=2, hidden=16, steps=30, batch=128, n_norm=2048, n_eval=2048, max_iter=3)


@pytest.mark.parametrize(
    "criterion,target,message",
    [
        ("tests.test_reliability:exploding", dict(top_fraction=0.01), "the gradient of the loss is (inf|nan)"),
        ("tests.test_reliability:constant", dict(top_fraction=0.01), "the criterion is constant on 2048 samples of p"),
    ],
)
def test_tuning_that_diverges_stops_with_a_diagnosis(tiny_model, tmp_path, monkeypatch, criterion, target, message):
    import criteria
    from energy_btgm.tuning.engine import TuneConfig
    from energy_btgm.tuning.run import tune_criterion

    monkeypatch.setenv(criteria.ALLOW_ENV, "tests.test_reliability")
    s = tmp_path / "store"
    shutil.copytree(tiny_model, s)
    shutil.rmtree(s / "banks", ignore_errors=True)
    with pytest.raises(TuningError, match=message):
        tune_criterion(s, criterion, s / "models" / "vae-n10", cfg=TuneConfig(**FAST), n_bank=50, **target)
    assert not (s / "banks").exists() or not any((s / "banks").rglob("*.parquet"))


def test_an_extreme_target_ends_finite_and_says_it_did_not_converge(tiny_model, tmp_path):
    """Top 10^-8 (KL 18.4) with a small budget: no NaN anywhere; the summary says the search did not converge."""
    from energy_btgm.tuning.engine import TuneConfig
    from energy_btgm.tuning.run import tune_criterion

    s = tmp_path / "store"
    shutil.copytree(tiny_model, s)
    with pytest.warns(RuntimeWarning, match="β search stopped after 3 iterations.*target 18.42"):
        summary = tune_criterion(
            s, "weekly-peak", s / "models" / "vae-n10", top_fraction=1e-8, cfg=TuneConfig(**FAST), n_bank=200
        )
    assert summary["converged"] is False and not store.nonfinite(summary)
    df = bank.read(summary["bank"])
    assert np.isfinite(df[["peak_kw", "weight", "log_q", "log_p"]].to_numpy()).all()
    assert np.isfinite(df.attrs["load_kw"]).all()


# --- the bad-input corpus through the whole pipeline ----------------------------------------------------------

CORPUS = Path(__file__).parent / "data" / "bad"
UNREADABLE = {  # files that cannot be read at all: the run fails at ingest with the reader's message
    "empty.csv": "the file is empty",
    "wrong_delimiter.csv": "is the delimiter ';'?",
    "missing_column.csv": "missing column(s) ['kwh']",
    "truncated.csv.gz": "truncated or corrupt gzip",
}


def test_every_file_of_the_bad_input_corpus_through_scenario_pipeline(curves_store, tmp_path):
    """Each unreadable file fails the run with its clear message (the file, what is wrong, the fix) and writes no
    readings; all the others, beside the good households, complete a run in which every data line is either kept
    or quarantined with its reason. Their meters are renamed per file (``text_value-M1``) so that files do not
    collide with each other; their defects are unchanged."""
    import pyarrow.parquet as pq
    from prefect.testing.utilities import prefect_test_harness

    from pipelines.flows import scenario_pipeline
    from tests.conftest import tiny_pipeline

    good = curves_store / "raw" / "synthetic" / "readings"
    assert set(UNREADABLE) < {p.name for p in CORPUS.iterdir()}
    with prefect_test_harness():
        for name, message in UNREADABLE.items():
            kw = tiny_pipeline(curves_store, tmp_path / name, sources=[str(good), str(CORPUS / name)])
            t0 = time.time()
            state = scenario_pipeline(**kw, return_state=True)
            assert time.time() - t0 < 30  # a bad file is not retried: it fails the same way every time
            assert state.is_failed() and name in state.message and message in state.message, state.message
            assert not (Path(kw["store"]) / "readings").exists()
        bad = tmp_path / "readable"
        bad.mkdir()
        lines = 0
        for p in sorted(CORPUS.iterdir()):
            if p.name not in UNREADABLE:
                data = p.read_bytes().replace(b"\nM", b"\n" + p.stem.encode() + b"-M")
                (bad / p.name).write_bytes(data)
                lines += data.count(b"\n") - 1  # data lines: all but the header
        kw = tiny_pipeline(curves_store, tmp_path / "run", sources=[str(good), str(bad)], compare_seconds=0.5, n_bank=50)
        result = scenario_pipeline(**kw)
    assert Path(result["report"]).exists() and "tune weekly-energy-n10" in result["ran"]
    c = json.loads((Path(kw["store"]) / "readings" / "_manifest.json").read_text())["counts"]
    good_rows = sum(pq.ParquetFile(f).metadata.num_rows for f in good.glob("*.parquet"))
    assert c["rows_in"] == good_rows + lines == c["rows_kept"] + c["rows_quarantined"], c
    reasons = set(c["quarantined_by_reason"])
    assert {"non_numeric_value", "invalid_utf8", "negative_value", "implausible_value", "conflicting_duplicate"} <= reasons
    assert {"malformed_row", "resolution_change", "stuck_zero", "stuck_constant"} <= reasons, reasons
