"""Grid study: power-flow throughput, and overload risk under p against an exact reference.

Needs the demo's 100-home model and its tuned weekly-peak bank (`make demo`) and the grid extra.

1. Cost: 1,000 weeks of the model laid on SimBench's 1-LV-rural2--0-sw, an AC power flow at each of
   their 336,000 half-hours (lightsim2grid, batched), against pandapower.runpp per step. Goal: ≤ 180 s.
2. Truth: under the allocation rule every load follows the group curve, so a week overloads the
   transformer exactly when its group peak exceeds t* (found by bisection on the power flow). The
   reference P(peak ≥ t*) comes from --reference draws of p (decoder only, no power flow), with a
   Wilson interval. The study's estimates (the bank's weights, a proposal built for the event, and
   rejection sampling at equal wall time) are printed beside it, for each grid, growth and seed:
   rural2 at demand x 1.65 (what `make grid-demo` runs) and, not tuned on, semiurb4 at x 2.64 and
   another seed. It also checks the equivalence on the simulated bank weeks, and the tuned bank's
   interval over 10 disjoint slices of 1,000 of its weeks.
Usage: python benchmarks/bench_grid.py [--store ../data] [--seconds 60] [--reference 3000000]
"""

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from _common import report

from energy_btgm.bank import read as read_bank
from energy_btgm.estimate.estimators import ess, weighted_estimates, wilson
from energy_btgm.grid.config import StudyConfig
from energy_btgm.grid.network import injections
from energy_btgm.grid.powerflow import runpp_metrics
from energy_btgm.grid.study import Study, latest_bank, run_study
from energy_btgm.model.vae import load_model

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--store", default=str(Path(__file__).resolve().parents[1] / "data"))
ap.add_argument("--seconds", type=float, default=60.0)
ap.add_argument("--reference", type=int, default=3_000_000)
a = ap.parse_args()
store = Path(a.store)
bank = latest_bank(store, "weekly-peak", 100)
bank_df = read_bank(bank)
gen = load_model(store / "models" / "vae-n100")

# 1. cost
study = Study(StudyConfig(grid="1-LV-rural2--0-sw", growth=1.65))
curves, _, _ = gen.sample(1000, seed=1)
t0 = time.perf_counter()
weeks = study.weeks(curves.astype(np.float64), "p")
pf_seconds = time.perf_counter() - t0
report("grid", "1,000 weeks x 336 power flows on 1-LV-rural2--0-sw", round(pf_seconds, 1), "s", "<= 180")
report("grid", "batched power flows per second", round(336_000 / pf_seconds), "1/s")
p, q = injections(curves[:1, :20].astype(np.float64), study.share, study.cfg.grid_config())
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    for k in range(20):
        runpp_metrics(study.net, p[0, k], q[0, k])
report("grid", "pandapower.runpp per power flow (the reference)", round((time.perf_counter() - t0) / 20 * 1000, 1), "ms")

# the reference sample of weekly peaks under p, shared by every case below
g = torch.Generator().manual_seed(99)
peaks = []
with torch.no_grad():
    for i in range(0, a.reference, 8192):
        peaks.append(gen.decode_kw(torch.randn(min(8192, a.reference - i), gen.latent_dim, generator=g))[0].max(1).values.numpy())
peaks = np.concatenate(peaks)

# 2. truth
for grid, growth, seed, estimator in (
    ("1-LV-rural2--0-sw", 1.65, 0, "auto"),
    ("1-LV-rural2--0-sw", 1.65, 1, "proposal"),
    ("1-LV-semiurb4--0-sw", 2.64, 0, "auto"),
):
    cfg = StudyConfig(grid=grid, growth=growth, seconds=a.seconds, seed=seed, estimator=estimator)
    r = run_study(bank, cfg)
    t_star = r["peak_threshold_kw"]
    k = int((peaks >= t_star).sum())
    lo, hi = wilson(k, len(peaks))
    tag = f"{grid} x{growth:g} seed {seed}"
    report(
        "grid", f"{tag}: reference P(overload) from {len(peaks):,} draws of p", f"{k / len(peaks):.3g} [{lo:.3g}, {hi:.3g}]", ""
    )
    for name, part in (("BTGM (" + r["btgm"]["method"] + ")", r["btgm"]), ("rejection", r["rejection"])):
        e = part["estimates"]["trafo_overload"]
        covers = "yes" if e["ci"][0] <= k / len(peaks) <= e["ci"][1] else "NO"
        report(
            "grid",
            f"{tag}: {name}, {part['seconds']:.0f} s, {part['scenarios']:,} weeks",
            f"{e['p']:.3g} [{e['ci'][0]:.3g}, {e['ci'][1]:.3g}]",
            "",
            f"interval covers the reference: {covers}",
        )
    # the sharing rule's equivalence on the simulated bank weeks, and the bank estimator's coverage over
    # 10 disjoint slices of 1,000 bank weeks (the event read off peak >= t*, exact by the equivalence)
    weeks_b = r["weeks"][r["weeks"]["source"] == "bank"]
    pk, w = bank_df["peak_kw"].to_numpy(np.float64), bank_df["weight"].to_numpy(np.float64)
    mismatch = int(((pk[: len(weeks_b)] >= t_star) != (weeks_b["trafo_loading_pct"] > cfg.trafo_limit).to_numpy()).sum())
    report("grid", f"{tag}: bank weeks where power flow and peak >= t* disagree", mismatch, "weeks", "0")
    covered, slice_ess = 0, []
    for i in range(10):
        ev, ws = pk[i * 1000 : (i + 1) * 1000] >= t_star, w[i * 1000 : (i + 1) * 1000]
        e = weighted_estimates(ev.astype(float), ws, 0.5, 0.5)
        covered += e["exceedance_ci"][0] <= k / len(peaks) <= e["exceedance_ci"][1]
        slice_ess.append(ess(ws[ev]))
    report("grid", f"{tag}: tuned-bank intervals (10 slices of 1,000 weeks) covering the reference", covered, "of 10", ">= 9")
    report(
        "grid",
        f"{tag}: ESS of the overload weeks' weights, per slice (min / median / max) and over the whole bank",
        f"{min(slice_ess):.0f} / {np.median(slice_ess):.0f} / {max(slice_ess):.0f}; {ess(w[pk >= t_star]):.0f}",
        "",
        ">= 100 for a slice's interval to count",
    )
    b, rj = r["btgm"]["estimates"]["trafo_overload"], r["rejection"]["estimates"]["trafo_overload"]
    width = lambda e: e["ci"][1] - e["ci"][0]  # noqa: E731
    report("grid", f"{tag}: interval width rejection / BTGM", round(width(rj) / max(width(b), 1e-300), 1), "x")
