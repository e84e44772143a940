"""BTGM targets on the demo models: KL reached, Pareto efficiency and seconds per tune.

Needs the demo's trained models (run `make demo` first). For weekly-peak, wednesday-gap and
mae-flatness on the 10- and 100-household models: a cold tune at ρ = 1e-2 (KL 4.61) in a fresh
store, then a warm one from its cached flow to ρ = 1.2e-2 (a nearby target), and, on the 10-home
model, a cold tune at ρ = 1e-4 (KL 9.21). Prints |KL − target|, the Pareto efficiency and the
seconds of each. Goals: |KL − 4.61| ≤ 0.1 and efficiency ≥ 0.95 at 1e-2, each tune ≤ 30 s on 2
cores (issue 19); |KL − 9.21| ≤ 0.2 and efficiency ≥ 0.9 at 1e-4 (issue 5).
Usage: python benchmarks/bench_tune.py [--store ../data] [--group-sizes 10 100] [--criteria ...]
"""

import argparse
import tempfile
from pathlib import Path

from _common import report

from energy_btgm.tuning.run import tune_criterion

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--store", default=str(Path(__file__).resolve().parents[1] / "data"))
ap.add_argument("--group-sizes", type=int, nargs="+", default=[10, 100])
ap.add_argument("--criteria", nargs="+", default=["weekly-peak", "wednesday-gap", "mae-flatness"])
a = ap.parse_args()
for n in a.group_sizes:
    model = Path(a.store) / "models" / f"vae-n{n}"
    if not (model / "model.json").exists():
        raise SystemExit(f"no model at {model}; run `make demo` first")
    runs = [(1e-2, 0.1, 0.95, "cold"), (1.2e-2, 0.1, 0.95, "warm")] + (
        [(1e-4, 0.2, 0.9, "cold")] if n == a.group_sizes[0] else []
    )
    for crit in a.criteria:
        with tempfile.TemporaryDirectory() as tmp:  # a fresh store: the first tune is cold, the next starts from it
            for rho, tol_kl, goal_eff, start in runs:
                s = tune_criterion(Path(tmp), crit, model, top_fraction=rho, n_bank=1000, warm=start == "warm")
                tag = f"{crit} n{n} rho={rho:g} {start}"
                report(
                    "tune", f"{tag}: |KL - {s['target_kl']:.2f}|", round(abs(s["kl"] - s["target_kl"]), 3), "nats", f"<= {tol_kl}"
                )
                report("tune", f"{tag}: Pareto efficiency", round(s["pareto_efficiency"], 3), "", f">= {goal_eff}")
                report(
                    "tune", f"{tag}: seconds ({len(s['path'])} β stages)", s["seconds"], "s", "<= 30" if rho > 1e-3 else "< 120"
                )
