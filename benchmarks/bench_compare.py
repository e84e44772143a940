"""BTGM vs rejection sampling on the demo model: far-tail estimates per criterion, level and seed (issue 19, item 2).

For each of weekly-peak, wednesday-gap and mae-flatness, each level u in 0.99, 0.999, 0.9999 and
each of --seeds seeds, `compare`'s BTGM path (``comparison.run_modes``: the mode-finding mixture's
search charged to the budget, then draws until --seconds are spent) estimates P(f ≥ t), t the
level-u quantile of an independent reference of 10^8 samples of p (`big_reference.py`, seed 11;
made first if missing, about 15 minutes). Rejection sampling's variance is the exact binomial
p(1 − p)/N at the N its --seconds afford, its rate measured by a 5-s run of `compare`'s rejection
sampler before each BTGM run (so that a slow spell of the shared machine weighs on both alike).

Prints per criterion, level and seed: the estimate with its 95 % interval against the reference's
exceedance, the variance ratio rejection / BTGM, Pareto k̂ and ESS; then per criterion and level the
smallest ratio over the seeds against its goal (weekly peak ≥ 5 / 30 / 100 at 0.99 / 0.999 / 0.9999,
the others ≥ 100 at 0.9999) and the coverage of the reference by the intervals: alone, and with the
reference's own binomial error folded in (at 1e-4 a 10^8-sample reference is itself ±2 % at 95 %).
With --also (references of other seeds, e.g. `big_reference.py --seed 12 --out ...`), it also prints the
coverage of each of them, and of all of them pooled, at the same thresholds.
Usage: python benchmarks/bench_compare.py [--store ../data] [--seconds 60] [--seeds 4]
                                          [--criteria weekly-peak ...] [--levels 0.99 ...] [--also REF.npz ...]
"""

import argparse
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
from _common import report

import criteria
from energy_btgm.core.weights import diagnose
from energy_btgm.estimate.comparison import run_modes, run_rejection
from energy_btgm.estimate.estimators import Z95, weighted_estimates
from energy_btgm.model.vae import load_model
from energy_btgm.store import sha256_file

GOALS = {"weekly-peak": (5, 30, 100), "wednesday-gap": (None, None, 100), "mae-flatness": (None, None, 100)}
ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--store", default=str(Path(__file__).resolve().parents[1] / "data"))
ap.add_argument("--group-size", type=int, default=10)
ap.add_argument("--seconds", type=float, default=60.0)
ap.add_argument("--seeds", type=int, default=4)
ap.add_argument("--criteria", nargs="+", default=list(GOALS))
ap.add_argument("--levels", nargs="+", type=float, default=[0.99, 0.999, 0.9999])
ap.add_argument("--reference", help="an .npz from big_reference.py (default: <store>/reference/big-reference-n<N>.npz)")
ap.add_argument(
    "--also",
    nargs="*",
    default=[],
    help="more .npz references (big_reference.py with other seeds): coverage of each, and of all pooled, at the same thresholds",
)
a = ap.parse_args()
store = Path(a.store)
model = store / "models" / f"vae-n{a.group_size}"
if not (model / "model.json").exists():
    raise SystemExit(f"no model at {model}; run `make demo` first")
ref_path = Path(a.reference or store / "reference" / f"big-reference-n{a.group_size}.npz")
sha = sha256_file(model / "weights.pt")
if not ref_path.exists() or str(np.load(ref_path)["model_sha256"]) != sha:
    print(f"making the independent reference {ref_path} (10^8 samples of p) ...", flush=True)
    cmd = [sys.executable, str(Path(__file__).with_name("big_reference.py")), "--store", str(store), "--out", str(ref_path)]
    subprocess.run([*cmd, "--group-size", str(a.group_size)], check=True)
ref = np.load(ref_path)
n_ref = int(ref["n"])
REF = f"{n_ref:.0e}-sample reference".replace("e+0", "e")  # e.g. "1e8-sample reference"
others = [np.load(p) for p in a.also]
for path, o in zip(a.also, others):
    if str(o["model_sha256"]) != sha:
        raise SystemExit(f"{path} was drawn from another model than {model}; rerun big_reference.py")
gen = load_model(model)
# per (criterion, level, reference): [intervals covering alone, with the reference's error, runs];
# reference None is the main one, then each --also reference by label
tallies: dict = {}


def covers(e: dict, p: float, sd: float) -> tuple[bool, bool]:
    """Whether BTGM's interval covers a reference's exceedance p alone, and with its error sd folded in."""
    lo, hi = e["exceedance_ci"]
    return lo <= p <= hi, abs(e["exceedance"] - p) <= Z95 * math.hypot(math.sqrt(e["exceedance_var"]), sd)


def tally(name: str, u: float, label: str | None, alone: bool, folded: bool) -> None:
    cell = tallies.setdefault((name, u, label), [0, 0, 0])
    cell[0], cell[1], cell[2] = cell[0] + alone, cell[1] + folded, cell[2] + 1


for name in a.criteria:
    crit = criteria.get(name)
    tail = np.sort(ref[f"f_{name}"])[::-1]  # the reference's values above its cut, descending
    for u, goal in zip(a.levels, GOALS.get(name, (None,) * 3)):
        k_u = int(round((1 - u) * n_ref))  # the u-quantile of all n_ref samples is the k_u-th largest
        if k_u >= len(tail):
            raise SystemExit(f"{ref_path} keeps too little of {name}'s tail for level {u}; rerun big_reference.py")
        t = float(tail[k_u - 1])
        p_ref = float((tail >= t).sum()) / n_ref
        sd_ref = math.sqrt(p_ref * (1 - p_ref) / n_ref)
        ratios, half = [], []
        # the other references at the same threshold, then all of them pooled: (name, p, sd)
        counts = [(f"seed {int(o['seed'])}", int((o[f"f_{name}"] >= t).sum()), int(o["n"])) for o in others]
        if counts:
            counts.append(("pooled", int((tail >= t).sum()) + sum(c[1] for c in counts), n_ref + sum(c[2] for c in counts)))
        extra = {label: (k / n, math.sqrt(k / n * (1 - k / n) / n)) for label, k, n in counts}
        for seed in range(a.seeds):
            _, rs_seconds, rs_n = run_rejection(gen, crit, 5.0, seed=100 + seed)
            var_rej = p_ref * (1 - p_ref) / (rs_n / rs_seconds * a.seconds)
            bt, t_train, seconds, evals = run_modes(gen, crit, u, a.seconds, seed + int(u * 1e6))
            e = weighted_estimates(bt["f"], bt["w"], u, t, bt["group"])
            d = diagnose(np.log(bt["w"][bt["f"] >= t]))
            ratio = var_rej / e["exceedance_var"]
            lo, hi = e["exceedance_ci"]
            tally(name, u, None, *covers(e, p_ref, sd_ref))
            ratios.append(ratio)
            half.append((hi - lo) / 2 / p_ref)
            for label, (p_x, sd_x) in extra.items():
                tally(name, u, label, *covers(e, p_x, sd_x))
            report(
                "compare",
                f"{name} u={u} seed {seed}: P(f >= t) [95 %] vs reference; ratio; k-hat; ESS; search s",
                f"{e['exceedance']:.4g} [{lo:.4g}, {hi:.4g}] vs {p_ref:.4g}; {ratio:.0f}x; "
                f"{d['pareto_k']:.2f}; {d['ess']:.0f}; {t_train:.1f} s of {seconds:.0f} s",
                "",
            )
        report(
            "compare",
            f"{name} u={u}: variance ratio rejection / BTGM, min over {a.seeds} seeds",
            round(min(ratios), 1),
            "x",
            f">= {goal}" if goal else "",
        )
        report(
            "compare",
            f"{name} u={u}: intervals covering the {REF}, alone / with its error",
            "{} / {}".format(*tallies[(name, u, None)]),
            f"of {a.seeds}",
            ">= 90 %",
        )
        report(
            "compare",
            f"{name} u={u}: 95 % half-width, BTGM's median over the seeds / the {REF}'s own",
            f"{100 * float(np.median(half)):.2f} % / {100 * Z95 * sd_ref / p_ref:.2f} %",
            "of p",
            "",
        )
        for label, (p_x, _) in extra.items():
            report(
                "compare",
                f"{name} u={u}: intervals covering the reference {label} ({p_x:.5g}), alone / with its error",
                "{} / {}".format(*tallies[(name, u, label)]),
                f"of {a.seeds}",
                ">= 90 %",
            )

# "in >= 90 % of repeats at every level": per level, the runs of every criterion and seed together
by_level: dict = {}  # {u: {reference: [alone, folded, runs]}}, summed over the criteria
for (_, u, label), cell in tallies.items():
    total = by_level.setdefault(u, {}).setdefault(label, [0, 0, 0])
    total[:] = [x + y for x, y in zip(total, cell)]
for u, refs in by_level.items():
    for label, (al, fo, runs) in refs.items():
        which = f"the {REF}" if label is None else f"the reference {label}"
        report(
            "compare",
            f"u={u}, all criteria and seeds: intervals covering {which}, alone / with its error",
            f"{al} / {fo} of {runs} ({100 * al / runs:.0f} % / {100 * fo / runs:.0f} %)",
            "",
            ">= 90 %",
        )
