"""Run a flow once from the command line, optionally on Dask.

    python -m pipelines.run tune-all --store data --group-sizes 10 100 --task-runner dask [--dask-address tcp://HOST:PORT]
    python -m pipelines.run scenario-pipeline --task-runner dask
    python -m pipelines.run scenario-pipeline --sources data/raw/synthetic/readings --dry-run   # what is stale
    python -m pipelines.run ingest-meters --sources data/raw/synthetic/readings --partitions 8 --task-runner dask

With ``--task-runner dask`` the per-partition ingest tasks and the per-criterion and per-group-size tasks go to the Dask
cluster at
``--dask-address`` (its workers need this project installed and the store on a shared path), or to a
local cluster of ``--workers`` processes when no address is given. The flow itself, and its report,
run in this process.
"""

import argparse
import os
import sys

# a one-off run starts Prefect's temporary server when no PREFECT_API_URL is set; its telemetry
# heartbeat can race the new database and log a spurious error, so it is off unless asked for
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from pipelines.flows import _GROUP_SIZES, ingest_meters, scenario_pipeline, tune_all, with_task_runner  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.run", description=__doc__.splitlines()[0])
    ap.add_argument("flow", choices=["ingest-meters", "tune-all", "scenario-pipeline"])
    ap.add_argument(
        "--sources", nargs="*", default=None, help="meter files or folders to ingest (ingest-meters, scenario-pipeline)"
    )
    ap.add_argument(
        "--partitions",
        type=int,
        default=None,
        help="ingest: partitions of households, one task each (default: one per ~2 M rows)",
    )
    ap.add_argument("--store", default="data")
    ap.add_argument("--reports", default="reports")
    ap.add_argument("--group-sizes", type=int, nargs="+", default=_GROUP_SIZES)
    ap.add_argument("--criteria", nargs="+", default=["weekly-peak", "wednesday-gap", "mae-flatness"])
    ap.add_argument("--top-fraction", type=float, default=0.01)
    ap.add_argument("--steps", type=int, default=None, help="tune: gradient steps per β stage (default: the library's)")
    ap.add_argument("--n-bank", type=int, default=10_000)
    ap.add_argument("--compare-seconds", type=float, default=60.0, help="scenario-pipeline: budget per method and level")
    ap.add_argument(
        "--dry-run", action="store_true", help="scenario-pipeline: list the steps that are stale and would run; run nothing"
    )
    ap.add_argument("--task-runner", default="thread", choices=["thread", "dask"])
    ap.add_argument("--dask-address", default=None, metavar="tcp://HOST:PORT")
    ap.add_argument("--workers", type=int, default=2, help="local Dask cluster size when no address is given")
    a = ap.parse_args(argv)
    if a.flow == "ingest-meters":
        if not a.sources:
            ap.error("ingest-meters needs --sources FILE_OR_FOLDER ...")
        out = with_task_runner(ingest_meters, a.task_runner, a.dask_address, a.workers)(
            sources=a.sources, store=a.store, reports=a.reports, partitions=a.partitions
        )
    elif a.flow == "tune-all":
        f = with_task_runner(tune_all, a.task_runner, a.dask_address, a.workers)
        out = f(
            store=a.store,
            group_sizes=a.group_sizes,
            criteria_names=a.criteria,
            top_fraction=a.top_fraction,
            steps=a.steps,
            n_bank=a.n_bank,
        )
    else:
        f = with_task_runner(scenario_pipeline, a.task_runner, a.dask_address, a.workers)
        out = f(
            sources=a.sources,
            partitions=a.partitions,
            store=a.store,
            reports=a.reports,
            group_sizes=a.group_sizes,
            criteria_names=a.criteria,
            top_fraction=a.top_fraction,
            tune_steps=a.steps,
            n_bank=a.n_bank,
            compare_seconds=a.compare_seconds,
            dry_run=a.dry_run,
        )
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
