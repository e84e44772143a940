"""Serve the deployments users run by name: `python -m pipelines.serve` (or `make serve`).

- btgm-tune/tune-peak, btgm-tune/tune-wednesday-gap, btgm-tune/tune-mae-flatness
- scenario-pipeline/weekly, every Monday at 03:00 Europe/Paris
- grid-study/transformer-risk: the store's tuned weekly-peak bank of 100-home groups on SimBench's
  1-LV-rural2--0-sw, demand x GRID_GROWTH (the overload is then a 1-in-a-few-thousand-weeks event)

Then, with a Prefect server reachable (PREFECT_API_URL): `prefect deployment run btgm-tune/tune-peak
-p top_fraction=0.001`. Runs execute in this process.
"""

from prefect import serve
from prefect.schedules import Cron

from pipelines.flows import btgm_tune, grid_study_flow, scenario_pipeline

WEEKLY_SOURCES = "data/raw/synthetic/readings"  # the meter folder the weekly run ingests; override with -p sources=...
GRID_GROWTH = 1.65  # electrification: demand x 1.65 puts the demo model's weekly overload risk near 4e-4 (make grid-demo)
TUNE_DEPLOYMENTS = {"tune-peak": "weekly-peak", "tune-wednesday-gap": "wednesday-gap", "tune-mae-flatness": "mae-flatness"}


def deployments() -> list:
    deps = [
        btgm_tune.to_deployment(
            name,
            parameters={"criterion": crit},
            tags=["btgm"],
            description=f"Tune the store's VAE toward {crit} (top 1 % by default)",
        )
        for name, crit in TUNE_DEPLOYMENTS.items()
    ]
    # the weekly run re-ingests the meter folder (skipped when its files' checksums are unchanged)
    deps.append(
        scenario_pipeline.to_deployment(
            "weekly",
            schedules=[Cron("0 3 * * 1", timezone="Europe/Paris")],
            parameters={"sources": [WEEKLY_SOURCES]},
            description="ingest → curves → train → tune → compare → report",
        )
    )
    deps.append(
        grid_study_flow.to_deployment(
            "transformer-risk",
            parameters={"criterion": "weekly-peak", "group_size": 100, "growth": GRID_GROWTH},
            tags=["btgm", "grid"],
            description="How likely a week overloads the transformer of a SimBench LV grid, under p, BTGM vs rejection",
        )
    )
    return deps


if __name__ == "__main__":
    serve(*deployments())
