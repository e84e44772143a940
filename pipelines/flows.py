"""Prefect flows: thin wrappers over ``energy_btgm``; each task calls one library function and returns a path.

Flows (names users type): ``ingest-meters``, ``build-curves``, ``train-vae``, ``btgm-tune``,
``compare``, ``grid-study``, and ``scenario-pipeline`` chaining the first five. ``scenario-pipeline`` skips a step when its
output's manifest records the same input checksums and config (the manifests are the cache keys),
so a rerun after a failure redoes only what is missing or stale.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from energy_btgm.data.config import CurvesConfig, IngestConfig
from energy_btgm.grid.config import StudyConfig
from energy_btgm.model.config import TrainConfig
from energy_btgm.store import sha256_file

BIND_ENV = "ENERGY_BTGM_BIND_HOST"  # the address a local Dask cluster listens on (default 127.0.0.1)

# flow parameters that are config fields take their defaults from the config dataclasses (one place)
_GROUP_SIZES = list(CurvesConfig.group_sizes)

# --- tasks: one library call each -------------------------------------------------------------


def _transient(task, task_run, state) -> bool:
    """Retry only what may pass on a second try: a bad file, a bad parameter or a diverged fit fails at once."""
    from energy_btgm.errors import StoreBusy, TrainingError, TuningError

    exc = state.data if isinstance(state.data, BaseException) else None
    return not isinstance(exc, (ValueError, KeyError, TrainingError, TuningError, StoreBusy))


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=_transient)
def stage_task(sources: list[str], store: str, fmt: str, tz: str, partitions: int | None, source_tz: str | None = None) -> dict:
    """Read the meter files and spill their rows into partitions of households; returns the plan."""
    from energy_btgm.data.ingest import IngestConfig, stage

    plan = stage(
        [Path(s) for s in sources], Path(store), IngestConfig(fmt=fmt, tz=tz, source_tz=source_tz), partitions=partitions
    )
    get_run_logger().info("ingest: %s rows read into %s partitions", plan["rows_in"], len(plan["partitions"]))
    return plan


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=_transient)
def clean_partition_task(staging: str, partition: str) -> dict:
    """Clean and validate one partition of households (a separate task each, so they fan out)."""
    from energy_btgm.data.ingest import clean_partition

    return clean_partition(Path(staging), partition)


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=_transient)
def finish_ingest_task(staging: str, store: str, reports: str) -> str:
    """Gather the partitions into <store>/readings; returns the manifest path."""
    from energy_btgm.data.ingest import finish

    m = finish(Path(staging), Path(store), Path(reports))
    get_run_logger().info(
        "ingest: %s rows in = %s kept + %s quarantined (%s partitions)",
        m["counts"]["rows_in"],
        m["counts"]["rows_kept"],
        m["counts"]["rows_quarantined"],
        m["partitions"],
    )
    return str(Path(store) / "readings" / "_manifest.json")


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=_transient)
def curves_task(store: str, reports: str, group_sizes: list[int], draws: int, seed: int) -> str:
    """Build household and group weekly curves; returns the manifest path."""
    from energy_btgm.data.curves import CurvesConfig, build

    build(Path(store), CurvesConfig(group_sizes=tuple(group_sizes), draws=draws, seed=seed), reports=Path(reports))
    return str(Path(store) / "curves" / "_manifest.json")


@task
def train_task(store: str, group_size: int, epochs: int, seed: int, options: dict | None = None) -> str:
    """Train the VAE for one group size (``options``: other TrainConfig fields); returns the model directory."""
    from energy_btgm.model.train import train

    return str(train(Path(store), _train_config(group_size, epochs, seed, options)))


def _train_config(group_size: int, epochs: int, seed: int, options: dict | None) -> TrainConfig:
    return TrainConfig(**{**(options or {}), "group_size": group_size, "epochs": epochs, "seed": seed})


def _tune_config(steps: int | None, seed: int):
    """The tuning settings of a run with ``steps`` per β stage (None: the library's), as tune_criterion records them."""
    from energy_btgm.core import BATCH
    from energy_btgm.tuning.engine import TuneConfig

    cfg = TuneConfig() if steps is None else TuneConfig(steps=steps, n_norm=BATCH, n_eval=BATCH)
    return dataclasses.replace(cfg, seed=seed)


@task
def tune_task(
    store: str,
    criterion: str,
    model: str,
    top_fraction: float | None,
    target_kl: float | None,
    seed: int,
    steps: int | None,
    n_bank: int,
) -> dict:
    """Tune a model toward a criterion; returns its summary."""
    from energy_btgm.tuning.run import tune_criterion

    cfg = _tune_config(steps, seed)
    return tune_criterion(
        Path(store), criterion, Path(model), top_fraction=top_fraction, target_kl=target_kl, seed=seed, cfg=cfg, n_bank=n_bank
    )


@task
def compare_task(
    store: str,
    reports: str,
    model: str,
    criterion: str,
    levels: list[float],
    seconds: float,
    reference_samples: int,
    proposal_steps: int | None = None,
) -> str:
    """Rejection sampling vs BTGM at an equal budget (``proposal_steps``: the flow's steps per β stage)."""
    from energy_btgm.estimate.comparison import compare, out_dir_for

    cfg = _proposal_config(proposal_steps)
    out = out_dir_for(Path(reports), criterion, json.loads((Path(model) / "model.json").read_text())["group_size"])
    compare(Path(model), criterion, levels, seconds, out, Path(store) / "reference", n_reference=reference_samples, cfg=cfg)
    return str(out / "compare.json")


def _proposal_config(steps: int | None):
    """The comparison's proposal settings with ``steps`` per β stage (None: the library's)."""
    from energy_btgm.estimate.proposal import PROPOSAL_CONFIG

    return PROPOSAL_CONFIG if steps is None else dataclasses.replace(PROPOSAL_CONFIG, steps=steps)


@task
def grid_study_task(bank: str, reports: str, config: dict) -> dict:
    """Power flows of a bank's weeks on a grid and the overload risk under p; returns the study (``study_json``: its file)."""
    from energy_btgm.grid.study import study_bank

    return study_bank(Path(bank), StudyConfig(**config), Path(reports))


@task(retries=2, retry_delay_seconds=5, retry_condition_fn=_transient)
def report_task(store: str, reports: str, run: str) -> str:
    from energy_btgm.outputs.report import build

    return str(build(Path(store), Path(reports), run=run))


def _lock(flow_name: str, store: str, **paths):
    """Check that every path parameter stays inside the allowed roots, then take the store's lock for this
    flow run: a second run on the same store stops with who holds it."""
    from prefect.runtime import flow_run

    from energy_btgm.store import confine, store_lock

    for what, value in {"store": store, **paths}.items():
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v is not None:
                confine(v, what)
    return store_lock(Path(store), run_id=str(flow_run.id or ""), command=f"flow {flow_name}")


# --- freshness: the manifests are the cache keys -----------------------------------------------


def _fresh_readings(store: Path, sources: list[str], fmt: str, tz: str, source_tz: str | None = None) -> bool:
    from energy_btgm.data.ingest import resolve_sources

    m = store / "readings" / "_manifest.json"
    if not m.exists():
        return False
    man = json.loads(m.read_text())
    files = resolve_sources([Path(x) for x in sources])
    want = dataclasses.asdict(IngestConfig(fmt=fmt, tz=tz, source_tz=source_tz))  # every field, defaults included
    return man["config"] == want and sorted((x["path"], x["sha256"]) for x in man["sources"]) == sorted(
        (str(f), sha256_file(f)) for f in files
    )


def _as_json(cfg) -> dict:
    """A config dataclass as its manifest or model.json holds it (tuples as lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _fresh_curves(store: Path, cfg: CurvesConfig) -> bool:
    """The curves record the current readings manifest and were built with ``cfg`` (sizes, draws, seed, ...)."""
    m = store / "curves" / "_manifest.json"
    r = store / "readings" / "_manifest.json"
    if not (m.exists() and r.exists()):
        return False
    man = json.loads(m.read_text())
    want = _as_json(cfg)
    return man.get("readings_manifest_sha256") == sha256_file(r) and man.get("config") == want


def _fresh_model(store: Path, n: int, cfg: TrainConfig | None = None) -> bool:
    """The model records the current curves' checksum and was trained with ``cfg`` (every field but the device)."""
    meta, curves = store / "models" / f"vae-n{n}" / "model.json", store / "curves" / f"groups-n{n}.parquet"
    if not (meta.exists() and curves.exists()):
        return False
    doc = json.loads(meta.read_text())
    want = {k: v for k, v in _as_json(cfg or TrainConfig(group_size=n)).items() if k != "device"}
    have = {k: v for k, v in doc.get("train_config", {}).items() if k != "device"}
    return doc.get("curves_sha256") == sha256_file(curves) and have == want


def _fresh_tune(
    store: Path,
    criterion: str,
    n: int,
    top_fraction: float | None = 0.01,
    seed: int = 0,
    steps: int | None = None,
    n_bank: int = 10_000,
) -> bool:
    """The tune records the current model's checksum and this run's target, seed, tuning settings and bank size,
    and its bank has the schema this code reads."""
    s, w = store / "tuned" / f"{criterion}-n{n}" / "summary.json", store / "models" / f"vae-n{n}" / "weights.pt"
    if not (s.exists() and w.exists()):
        return False
    doc = json.loads(s.read_text())
    from energy_btgm.bank import SCHEMA_VERSION

    keys = ("model_sha256", "top_fraction", "seed", "tune_config", "n_bank", "bank_schema")
    return tuple(doc.get(k) for k in keys) == (
        sha256_file(w),
        top_fraction,
        seed,
        dataclasses.asdict(_tune_config(steps, seed)),
        n_bank,
        SCHEMA_VERSION,
    )


def _fresh_compare(
    path: Path,
    model: Path,
    criterion: str,
    levels: list[float],
    seconds: float,
    reference_samples: int | None = None,
    proposal_steps: int | None = None,
) -> bool:
    """The comparison records the current model's checksum, the criterion, levels, budget, reference size and
    proposal (the mode-finding mixture, the default) and its settings."""
    if not path.exists() or not (model / "weights.pt").exists():
        return False
    c = json.loads(path.read_text())
    same_reference = reference_samples is None or c.get("reference_samples") == reference_samples
    same_proposal = c.get("proposal", "flows") == "modes" and c.get("proposal_config") == dataclasses.asdict(
        _proposal_config(proposal_steps)
    )
    have = (c.get("model_sha256"), c["criterion"], sorted(map(float, c["levels"])), c["seconds_budget"])
    want = (sha256_file(model / "weights.pt"), criterion, sorted(levels), seconds)
    return same_reference and same_proposal and have == want


COMPARE_LEVELS = [0.99, 0.999, 0.9999]  # scenario-pipeline's comparison: the weekly peak of the first group size


def plan(
    store: Path,
    reports: Path,
    sources: list[str] | None,
    group_sizes: list[int],
    criteria_names: list[str],
    compare_seconds: float,
    reference_samples: int,
    *,
    compare_levels: list[float] = COMPARE_LEVELS,
    fmt: str,
    tz: str,
    source_tz: str | None,
    draws: int,
    epochs: int,
    train_options: dict | None,
    top_fraction: float,
    tune_steps: int | None,
    n_bank: int,
    seed: int,
) -> dict[str, bool]:
    """Which steps of scenario-pipeline run (True) and which are up to date (False), in order.

    A step runs when its output is stale (its manifest does not record the current inputs' checksums and
    every parameter that changes it) or a step it depends on runs; nothing is read but manifests and
    checksums, so the plan is the same before the run as step by step during it."""
    from energy_btgm.estimate.comparison import out_dir_for

    runs: dict[str, bool] = {}

    def step(name: str, fresh: bool, after: tuple[str, ...] = ()) -> None:
        runs[name] = not fresh or any(runs.get(a) for a in after)

    if sources:
        step("ingest", _fresh_readings(store, sources, fmt, tz, source_tz))
    curves_cfg = CurvesConfig(group_sizes=tuple(group_sizes), draws=draws, seed=seed)
    curves_there = all((store / "curves" / f"groups-n{n}.parquet").exists() for n in group_sizes)
    step("curves", _fresh_curves(store, curves_cfg) and curves_there, after=("ingest",))
    for n in group_sizes:
        step(f"train vae-n{n}", _fresh_model(store, n, _train_config(n, epochs, seed, train_options)), after=("curves",))
        for c in criteria_names:
            fresh = _fresh_tune(store, c, n, top_fraction, seed, tune_steps, n_bank)
            step(f"tune {c}-n{n}", fresh, after=(f"train vae-n{n}",))
    out = out_dir_for(reports, "weekly-peak", group_sizes[0]) / "compare.json"
    model = store / "models" / f"vae-n{group_sizes[0]}"
    fresh = _fresh_compare(out, model, "weekly-peak", compare_levels, compare_seconds, reference_samples, tune_steps)
    step("compare", fresh, after=(f"train vae-n{group_sizes[0]}",))
    return runs


def _publish(summary: dict, report: str | None) -> None:
    """Markdown artifact with the headline numbers, table artifact with the β path."""
    s = summary
    md = (
        f"### BTGM: {s['criterion']}, groups of {s['group_size']}\n\n"
        f"| β | KL (target) | E f tuned | E f under p | Pareto efficiency | seconds |\n|---|---|---|---|---|---|\n"
        f"| {s['beta']:.3f} | {s['kl']:.3f} ({s['target_kl']:.3f}) | {s['mean_f']:.2f} {s['unit']} | "
        f"{s['mean_f_under_p']:.2f} {s['unit']} | {s['pareto_efficiency']:.3f} | {s['seconds']:.0f} |\n\n"
        f"Bank: `{s['bank']}`" + (f"  \nReport: `{report}`" if report else "")
    )
    key = f"btgm-{s['criterion']}-n{s['group_size']}".lower()
    create_markdown_artifact(markdown=md, key=key, description="BTGM headline numbers")
    create_table_artifact(
        table=[{k: round(p[k], 4) for k in ("iteration", "beta", "kl", "mean_f")} for p in s["path"]],
        key=f"{key}-beta-path",
        description="β search path",
    )


# --- flows ---------------------------------------------------------------------------------------


@flow(name="ingest-meters")
def ingest_meters(
    sources: list[str],
    store: str = "data",
    reports: str = "reports",
    fmt: str = IngestConfig.fmt,
    tz: str = IngestConfig.tz,
    partitions: int | None = None,
    source_tz: str | None = IngestConfig.source_tz,
) -> str:
    """Read → clean each partition of households as its own task (on the flow's task runner) → gather."""
    with _lock("ingest-meters", store, reports=reports, sources=sources):
        return _ingest(sources, store, reports, fmt, tz, partitions, source_tz)


def _ingest(sources, store, reports, fmt, tz, partitions, source_tz=None) -> str:
    """The ingest tasks, submitted on the calling flow's task runner (Dask workers need the store on a shared path)."""
    plan = stage_task(sources, store, fmt, tz, partitions, source_tz)
    for f in clean_partition_task.map(plan["staging"], plan["partitions"]):
        f.result()
    return finish_ingest_task(plan["staging"], store, reports)


@flow(name="build-curves")
def build_curves(
    store: str = "data",
    reports: str = "reports",
    group_sizes: list[int] = _GROUP_SIZES,
    draws: int = CurvesConfig.draws,
    seed: int = CurvesConfig.seed,
) -> str:
    with _lock("build-curves", store, reports=reports):
        return curves_task(store, reports, group_sizes, draws, seed)


@flow(name="train-vae")
def train_vae(
    store: str = "data",
    group_size: int = TrainConfig.group_size,
    epochs: int = TrainConfig.epochs,
    seed: int = TrainConfig.seed,
    options: dict | None = None,
) -> str:
    with _lock("train-vae", store):
        return train_task(store, group_size, epochs, seed, options)


@flow(name="btgm-tune")
def btgm_tune(
    criterion: str = "weekly-peak",
    group_size: int = 10,
    top_fraction: float | None = 0.01,
    target_kl: float | None = None,
    model: str | None = None,
    store: str = "data",
    reports: str = "reports",
    seed: int = 0,
    steps: int | None = None,
    n_bank: int = 10_000,
    report: bool = True,
) -> dict:
    """Tune the store's model for ``group_size`` (or ``model``) toward ``criterion``; publish the numbers."""
    from energy_btgm.model.train import latest_model

    with _lock("btgm-tune", store, reports=reports, model=model):
        if target_kl is not None:
            top_fraction = None
        model_dir = model or str(latest_model(Path(store), group_size))
        summary = tune_task(store, criterion, model_dir, top_fraction, target_kl, seed, steps, n_bank)
        report_path = report_task(store, reports, "latest") if report else None
        _publish(summary, report_path)
        get_run_logger().info(
            "%s: beta %.3f, KL %.3f, Pareto efficiency %.3f; report %s",
            criterion,
            summary["beta"],
            summary["kl"],
            summary["pareto_efficiency"],
            report_path,
        )
        return summary


@flow(name="compare")
def compare_flow(
    store: str = "data",
    reports: str = "reports",
    group_size: int = 10,
    criterion: str = "weekly-peak",
    levels: list[float] = [0.99, 0.999, 0.9999],
    seconds: float = 60.0,
    reference_samples: int = 10_000_000,
) -> str:
    from energy_btgm.model.train import latest_model

    with _lock("compare", store, reports=reports):
        path = compare_task(
            store, reports, str(latest_model(Path(store), group_size)), criterion, levels, seconds, reference_samples
        )
        _publish_quantiles(path)
        return path


_STUDY = StudyConfig()


@flow(name="grid-study")
def grid_study_flow(
    store: str = "data",
    reports: str = "reports",
    bank: str | None = None,
    criterion: str = "weekly-peak",
    group_size: int = 100,
    grid: str = _STUDY.grid,
    scenarios: int = _STUDY.scenarios,
    seconds: float = _STUDY.seconds,
    trafo_limit: float = _STUDY.trafo_limit,
    v_min: float = _STUDY.v_min,
    v_max: float = _STUDY.v_max,
    growth: float = _STUDY.growth,
    power_factor: float = _STUDY.power_factor,
    seed: int = _STUDY.seed,
    report: bool = True,
) -> dict:
    """Transformer overload and voltage risk of the store's tuned bank (or ``bank``) on ``grid``; publishes the estimates."""
    from energy_btgm.grid.study import latest_bank

    grid_file = grid if grid.lower().endswith(".json") else None
    with _lock("grid-study", store, reports=reports, bank=bank, grid=grid_file):
        bank = bank or str(latest_bank(Path(store), criterion, group_size))
        config = dataclasses.asdict(_STUDY) | dict(
            grid=grid,
            scenarios=scenarios,
            seconds=seconds,
            trafo_limit=trafo_limit,
            v_min=v_min,
            v_max=v_max,
            growth=growth,
            power_factor=power_factor,
            seed=seed,
        )
        result = grid_study_task(bank, reports, config)
        report_path = report_task(store, reports, "latest") if report else None
        create_table_artifact(
            table=[
                {
                    "event": event,
                    "method": name,
                    "p": e["p"],
                    "ci": [float(f"{v:.4g}") for v in e["ci"]],
                    "seconds": round(part["seconds"], 1),
                    "weeks": part["scenarios"],
                }
                for name, part in (("BTGM", result["btgm"]), ("rejection", result["rejection"]))
                for event, e in part["estimates"].items()
            ],
            key=f"grid-{result['group_size']}-{Path(grid).stem.lower()}".replace("_", "-").replace(".", "-"),
            description=f"weekly overload risk on {grid}, demand x {growth:g}"
            + (f"; report {report_path}" if report_path else ""),
        )
        e = result["btgm"]["estimates"]["trafo_overload"]
        get_run_logger().info(
            "%s: P(transformer > %g %%) = %.3g [%.3g, %.3g] by %s in %.0f s; study %s",
            grid,
            trafo_limit,
            e["p"],
            e["ci"][0],
            e["ci"][1],
            result["btgm"]["method"],
            result["btgm"]["seconds"],
            result["study_json"],
        )
        return result


def _publish_quantiles(path: str) -> None:
    """Table artifact with the quantile and exceedance estimates of a compare.json, per level and method."""
    c = json.loads(Path(path).read_text())
    create_table_artifact(
        table=[
            {
                "level": u,
                "method": m,
                "quantile": round(e[m]["quantile"], 4),
                "quantile_ci": [round(v, 4) for v in e[m].get("quantile_ci", [])],
                "exceedance": e[m]["exceedance"],
            }
            for u, e in c["levels"].items()
            for m in ("reference", "rejection", "btgm")
        ],
        key=f"quantiles-{c['criterion']}-n{c['group_size']}",
        description="quantile estimates",
    )


@flow(name="tune-all")
def tune_all(
    store: str = "data",
    group_sizes: list[int] = _GROUP_SIZES,
    criteria_names: list[str] = ["weekly-peak", "wednesday-gap", "mae-flatness"],
    top_fraction: float = 0.01,
    seed: int = 0,
    steps: int | None = None,
    n_bank: int = 10_000,
) -> list[str]:
    """Tune every criterion for every group size: one task each, fanned out on the flow's task runner."""
    from energy_btgm.model.train import latest_model

    with _lock("tune-all", store):
        futures = [
            tune_task.submit(store, c, str(latest_model(Path(store), n)), top_fraction, None, seed, steps, n_bank)
            for n in group_sizes
            for c in criteria_names
        ]
        summaries = [f.result() for f in futures]
        for s in summaries:
            _publish(s, None)
        return [s["flow_dir"] for s in summaries]


def with_task_runner(flow_obj, task_runner: str = "thread", dask_address: str | None = None, n_workers: int = 2):
    """The flow with a Dask task runner (an existing cluster at ``dask_address``, or a local one) or Prefect's default."""
    if task_runner == "thread":
        return flow_obj
    if task_runner != "dask":
        raise ValueError(f"--task-runner must be thread or dask, got {task_runner!r}")
    from prefect_dask import DaskTaskRunner

    host = os.environ.get(BIND_ENV, "127.0.0.1")  # the local cluster listens on loopback only unless configured
    cluster = {"n_workers": n_workers, "threads_per_worker": 1, "processes": True, "host": host}
    cluster["dashboard_address"] = f"{host}:8787"  # dask's default dashboard listens on every interface
    runner = DaskTaskRunner(address=dask_address) if dask_address else DaskTaskRunner(cluster_kwargs=cluster)
    return flow_obj.with_options(task_runner=runner)


@flow(name="scenario-pipeline")
def scenario_pipeline(
    sources: list[str] | None = None,
    store: str = "data",
    reports: str = "reports",
    fmt: str = IngestConfig.fmt,
    tz: str = IngestConfig.tz,
    partitions: int | None = None,
    source_tz: str | None = IngestConfig.source_tz,
    group_sizes: list[int] = _GROUP_SIZES,
    criteria_names: list[str] = ["weekly-peak", "wednesday-gap", "mae-flatness"],
    top_fraction: float = 0.01,
    draws: int = CurvesConfig.draws,
    epochs: int = TrainConfig.epochs,
    train_options: dict | None = None,
    tune_steps: int | None = None,
    n_bank: int = 10_000,
    seed: int = 0,
    compare_seconds: float = 60.0,
    reference_samples: int = 2_000_000,
    compare_levels: list[float] = COMPARE_LEVELS,
    dry_run: bool = False,
) -> dict:
    """ingest → curves → train → tune → compare → report; a step runs only when its output is missing or stale
    (its manifest does not record the current inputs' checksums and every parameter that changes it) or a step
    it depends on runs, so a rerun after a failure or a change redoes only what is affected. Returns the report
    path and which steps ran or were skipped; ``dry_run`` says which would run, and runs nothing."""
    with _lock("scenario-pipeline", store, reports=reports, sources=sources):
        log = get_run_logger()
        s = Path(store)
        params = dict(fmt=fmt, tz=tz, source_tz=source_tz, draws=draws, epochs=epochs, train_options=train_options)
        params |= dict(top_fraction=top_fraction, tune_steps=tune_steps, n_bank=n_bank, seed=seed, compare_levels=compare_levels)
        runs = plan(s, Path(reports), sources, group_sizes, criteria_names, compare_seconds, reference_samples, **params)
        ran, skipped = [k for k, v in runs.items() if v], [k for k, v in runs.items() if not v]
        for name, stale in runs.items():
            log.info("%s: %s", name, "would run" if stale and dry_run else "runs" if stale else "up to date, skipped")
        if dry_run:
            return {"report": None, "ran": ran, "skipped": skipped, "dry_run": True}
        if runs.get("ingest"):
            _ingest(sources, store, reports, fmt, tz, partitions, source_tz)
        if runs["curves"]:
            curves_task(store, reports, group_sizes, draws, seed)
        tunes = []
        for n in group_sizes:
            if runs[f"train vae-n{n}"]:
                train_task(store, n, epochs, seed, train_options)
            for c in criteria_names:
                if runs[f"tune {c}-n{n}"]:
                    model = str(s / "models" / f"vae-n{n}")
                    tunes.append(tune_task.submit(store, c, model, top_fraction, None, seed, tune_steps, n_bank))
        for t in tunes:
            _publish(t.result(), None)
        if runs["compare"]:
            model = str(s / "models" / f"vae-n{group_sizes[0]}")
            _publish_quantiles(
                compare_task(store, reports, model, "weekly-peak", compare_levels, compare_seconds, reference_samples, tune_steps)
            )
        report = report_task(store, reports, "latest")
        create_markdown_artifact(
            markdown=f"### scenario-pipeline\n\nRan: {', '.join(ran) or '-'}  \n"
            f"Skipped (up to date): {', '.join(skipped) or '-'}  \nReport: `{report}`",
            key="scenario-pipeline",
            description="steps run and the report",
        )
        return {"report": report, "ran": ran, "skipped": skipped}
