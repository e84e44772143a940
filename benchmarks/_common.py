"""Shared helpers for benchmark scripts: each prints figures as `BENCH {json}` lines for run_all.py."""

import json
import resource


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far [MB] (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def report(bench: str, figure: str, value: float, unit: str, goal: str = "") -> None:
    print("BENCH " + json.dumps({"bench": bench, "figure": figure, "value": value, "unit": unit, "goal": goal}), flush=True)
