"""Fault injection: each step is SIGKILLed at seeded kill points, then rerun; the rerun completes with the same
outputs as an uninterrupted run, and no partial file is ever visible to a reader.

Steps run in child processes forked from a forkserver that has imported torch and the library once, so a
killed run costs a fork, not an interpreter start. A kill point is the k-th call of ``energy_btgm.faults.point``
(every atomic write passes one just before its rename; training epochs, β stages, curve buckets and
comparison levels pass one per iteration). ``SEED`` draws the points; a failure names the step and k, and
replays with ``ENERGY_BTGM_KILL_AT=k``.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import random
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from tests.conftest import TINY

SEED = 20261129
KILLS_PER_STEP = 3
STEPS = ["ingest", "curves", "train", "tune", "compare", "report"]


def run_step(step: str, root: str, kill_at: int | None, record: str | None) -> None:
    """One step on the store ``root/store`` (reports in ``root/reports``), as the CLI would run it."""
    torch.set_num_threads(1)
    from energy_btgm import faults

    faults.arm(kill_at, record)
    root_p = Path(root)
    store, reports = root_p / "store", root_p / "reports"
    if step == "ingest":
        from energy_btgm.data.ingest import IngestConfig, ingest

        ingest([root_p / "raw"], store, IngestConfig(), reports=reports, validate=False, partitions=1)
    elif step == "curves":
        from energy_btgm.data.curves import CurvesConfig, build

        build(store, CurvesConfig(group_sizes=(10,), draws=40, seed=0), reports=reports, validate=False)
    elif step == "train":
        from energy_btgm.model.train import TrainConfig, train

        train(store, TrainConfig(**TINY), card=False, resume=True)
    elif step == "tune":
        from energy_btgm.tuning.engine import TuneConfig
        from energy_btgm.tuning.run import tune_criterion

        cfg = TuneConfig(transforms=2, hidden=16, steps=20, batch=128, n_norm=1024, n_eval=1024, max_iter=2)
        tune_criterion(store, "weekly-energy", store / "models" / "vae-n10", top_fraction=0.3, seed=0, cfg=cfg, n_bank=100)
    elif step == "compare":
        from energy_btgm.estimate.comparison import compare
        from energy_btgm.tuning.engine import TuneConfig

        cfg = TuneConfig(transforms=2, hidden=16, steps=20, batch=128, n_norm=1024, n_eval=1024, max_iter=2)
        out = reports / "compare" / "weekly-peak-n10"
        compare(
            store / "models" / "vae-n10", "weekly-peak", [0.9, 0.99], 0.5, out, store / "reference", n_reference=20_000, cfg=cfg
        )
    elif step == "report":
        from energy_btgm.outputs.report import build as report

        report(store, reports, run="latest")
    else:
        raise ValueError(step)


def _ctx():
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "pyarrow.parquet", "pandas", "energy_btgm.model.train", "energy_btgm.tuning.run"])
    return ctx


def _child(root: Path, step: str, kill_at: int | None = None, record: Path | None = None) -> int:
    p = _ctx().Process(target=run_step, args=(step, str(root), kill_at, str(record) if record else None))
    p.start()
    p.join(300)
    if p.is_alive():
        p.kill()
        pytest.fail(f"{step} (kill at {kill_at}) hung")
    return p.exitcode


def visible(root: Path) -> list[Path]:
    """The files a reader sees: everything not under a hidden (temporary, staging, in-progress) name."""
    return sorted(
        p for p in root.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def assert_complete(root: Path) -> None:
    """Every visible Parquet, JSON and torch file reads whole."""
    for p in visible(root):
        try:
            if p.suffix == ".parquet":
                pq.read_table(p)
            elif p.suffix == ".json":
                json.loads(p.read_text())
            elif p.suffix == ".pt":
                torch.load(p, weights_only=True)
        except Exception as e:  # noqa: BLE001 - any failure to read is a partial file
            pytest.fail(f"partial file visible to a reader: {p} ({type(e).__name__}: {e})")


def outputs(root: Path, step: str) -> dict:
    """What an uninterrupted run of ``step`` must reproduce: rows of its tables, tensors of its weights."""
    s = root / "store"
    if step == "ingest":
        return {
            "readings": _rows(s / "readings"),
            "quarantine": json.loads((s / "readings" / "_manifest.json").read_text())["counts"],
        }
    if step == "curves":
        return {"groups": _rows(s / "curves" / "groups-n10.parquet")}
    if step == "train":
        sd = torch.load(s / "models" / "vae-n10" / "weights.pt", weights_only=True)
        return {k: v.numpy().tobytes() for k, v in sd.items()}
    if step == "tune":
        summary = json.loads((s / "tuned" / "weekly-energy-n10" / "summary.json").read_text())
        return {"bank": _rows(Path(summary["bank"])), "beta": summary["beta"]}
    if step == "compare":  # wall-clock budgets: complete and well formed, not equal
        c = json.loads((root / "reports" / "compare" / "weekly-peak-n10" / "compare.json").read_text())
        return {"levels": sorted(c["levels"])}
    return {"report": (root / "reports" / "latest" / "index.html").exists()}


def _rows(path: Path):
    """The table's rows in a canonical order, without its metadata (which records times)."""
    import pyarrow as pa

    t = pq.read_table(path).replace_schema_metadata(None)
    keys = [n for n in t.column_names if not pa.types.is_nested(t.schema.field(n).type)][:3]
    return t.sort_by([(k, "ascending") for k in keys])


@pytest.fixture(scope="module")
def stages(tmp_path_factory, curves_store):
    """For each step: the store before it, the outputs of an uninterrupted run and its kill points."""
    base = tmp_path_factory.mktemp("faults")
    root = base / "run"
    shutil.copytree(curves_store / "raw" / "synthetic" / "readings", root / "raw")
    before, expected, points = {}, {}, {}
    for step in STEPS:
        before[step] = base / f"before-{step}"
        shutil.copytree(root, before[step])
        record = base / f"points-{step}.txt"
        assert _child(root, step, record=record) == 0, step
        points[step] = record.read_text().splitlines()
        expected[step] = outputs(root, step)
    return before, expected, points


def kill_points() -> list[tuple[str, int]]:
    """(step, index into that step's points) pairs, drawn with SEED: the same points on every run."""
    rng = random.Random(SEED)
    return [(step, rng.random()) for step in STEPS for _ in range(KILLS_PER_STEP)]


@pytest.mark.parametrize("step,u", kill_points(), ids=lambda v: v if isinstance(v, str) else f"{v:.3f}")
def test_killed_step_reruns_to_the_same_outputs(stages, tmp_path, step, u):
    before, expected, points = stages
    n = len(points[step])
    assert n >= 3, f"{step} passes only {n} kill points: {points[step]}"
    k = 1 + int(u * n)  # 1..n
    root = tmp_path / "run"
    shutil.copytree(before[step], root)
    code = _child(root, step, kill_at=k)
    assert code == -9, f"{step}: expected SIGKILL at point {k} ({points[step][k - 1]}), exit code {code}"
    assert_complete(root)
    assert _child(root, step) == 0, f"{step}: the rerun after a kill at point {k} ({points[step][k - 1]}) failed"
    assert_complete(root)
    assert outputs(root, step) == expected[step], f"{step}: rerun after a kill at point {k} ({points[step][k - 1]}) differs"
