"""BTGM targets on the demo model: KL reached and Pareto efficiency at the top 1 % and top 0.01 %.

Needs the demo's trained model (run `make demo` first). For weekly-peak, wednesday-gap and
mae-flatness at ρ = 1e-2 (KL 4.61) and ρ = 1e-4 (KL 9.21) on the 10-household model, prints |KL −
target|, the Pareto efficiency and the seconds per tune. Goals (issue 5): |KL − 4.61| ≤ 0.1 and
efficiency ≥ 0.95 at 1e-2; |KL − 9.21| ≤ 0.2 and efficiency ≥ 0.9 at 1e-4; each tune under 120 s.
Usage: python benchmarks/bench_tune.py [--store ../data] [--group-size 10]
"""

import argparse
import tempfile
from pathlib import Path

from _common import report

from energy_btgm.tuning.run import tune_criterion

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--store", default=str(Path(__file__).resolve().parents[1] / "data"))
ap.add_argument("--group-size", type=int, default=10)
ap.add_argument("--criteria", nargs="+", default=["weekly-peak", "wednesday-gap", "mae-flatness"])
a = ap.parse_args()
model = Path(a.store) / "models" / f"vae-n{a.group_size}"
if not (model / "model.json").exists():
    raise SystemExit(f"no model at {model}; run `make demo` first")
with tempfile.TemporaryDirectory() as tmp:
    for rho, tol_kl, goal_eff in ((1e-2, 0.1, 0.95), (1e-4, 0.2, 0.9)):
        for crit in a.criteria:
            s = tune_criterion(Path(tmp), crit, model, top_fraction=rho, n_bank=1000)
            tag = f"{crit} n{a.group_size} rho={rho:g}"
            report("tune", f"{tag}: |KL - {s['target_kl']:.2f}|", round(abs(s["kl"] - s["target_kl"]), 3), "nats", f"<= {tol_kl}")
            report("tune", f"{tag}: Pareto efficiency", round(s["pareto_efficiency"], 3), "", f">= {goal_eff}")
            report("tune", f"{tag}: seconds", s["seconds"], "s", "< 120")
