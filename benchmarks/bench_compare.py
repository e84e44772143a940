"""BTGM vs rejection sampling on the demo model: variance of exceedance estimates at equal budget.

Per level: the proposal is prepared once as `compare` prepares it (tuned to KL = −log(1 − u), one
flow per day of the peak in the far tail, refined toward the tail, a pilot that allocates samples
among its flows), and its time is charged to every repeat. Each of --repeats repeats then samples
q̂ for --repeat-seconds and estimates P(peak ≥ t), t the reference quantile; the variance of the
repeats is scaled to the samples the rest of the 60-s budget affords (variance ∝ 1/N), which keeps
the benchmark under 15 minutes. Rejection sampling's variance is the exact binomial p(1−p)/N at the
N its budget affords. Both sampling rates are measured interleaved (one second of rejection
sampling after every repeat), so that a slow spell of the shared machine weighs on both alike.

Prints the variance ratio; the coverage of BTGM's 95 % intervals over the reference (alone, and with
the reference's own sampling error folded in: at 0.9999 a 10^7-sample reference holds about 1,000
exceedances, a 3 % relative error, larger than BTGM's); their calibration against the other
repeats' mean; and the speed ratio for 10,000 effective tail scenarios. Goals (issue 6): ratio
≥ 100 at 0.9999, ≥ 3 at 0.99; intervals cover at about their nominal rate; ≥ 20× faster to 10,000
effective top-0.01 % scenarios.
With --independent-reference (made by big_reference.py: 10^8 samples of p with another seed, a
1 % error at 0.9999), it also prints the coverage of that independent value by BTGM's intervals and
the mean estimate's relative error against it.
Usage: python benchmarks/bench_compare.py [--store ../data] [--seconds 60] [--repeats 40] [--seed 3]
                                          [--independent-reference ../data/reference/big-reference.npz]
"""

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from _common import report

import criteria
from energy_btgm.estimate.comparison import reference, run_rejection
from energy_btgm.estimate.estimators import Z95, weighted_estimates
from energy_btgm.estimate.proposal import PROPOSAL_CONFIG, prepare_proposal, sample_proposal
from energy_btgm.model.vae import load_model
from energy_btgm.store import sha256_file

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--store", default=str(Path(__file__).resolve().parents[1] / "data"))
ap.add_argument("--group-size", type=int, default=10)
ap.add_argument("--seconds", type=float, default=60.0)
ap.add_argument("--repeats", type=int, default=40)
ap.add_argument("--reference-samples", type=int, default=10_000_000)
ap.add_argument("--repeat-seconds", type=float, default=5.0)
ap.add_argument(
    "--seed", type=int, default=3, help="seed of the proposal's tuning and of the sampling (another seed: another proposal)"
)
ap.add_argument("--independent-reference", help="an .npz from big_reference.py")
a = ap.parse_args()
store = Path(a.store)
model = store / "models" / f"vae-n{a.group_size}"
if not (model / "model.json").exists():
    raise SystemExit(f"no model at {model}; run `make demo` first")
gen = load_model(model)
crit = criteria.get("weekly-peak")
ref = reference(gen, "weekly-peak", store / "reference", n=a.reference_samples)
ind = np.load(a.independent_reference) if a.independent_reference else None
if ind is not None and str(ind.get("model_sha256", "")) != sha256_file(model / "weights.pt"):
    raise SystemExit(f"{a.independent_reference} was drawn from another model than {model}; rerun benchmarks/big_reference.py")
for u in (0.9999, 0.99):
    t_ref = float(np.quantile(ref["f"], u))
    p_ref = float((ref["f"] >= t_ref).mean())
    se_ref = math.sqrt(p_ref * (1 - p_ref) / len(ref["f"]))  # the reference is itself an estimate
    g = torch.Generator().manual_seed(a.seed + 8)
    prop, _ = prepare_proposal(gen, crit, u, PROPOSAL_CONFIG, seed=a.seed, generator=g)
    t_train = prop.train_seconds
    budget = max(a.seconds - t_train, 0.0)
    est, ses, n_btgm, rate_btgm, rate_rej, ess_rate = [], [], [], [], [], []
    for r in range(a.repeats):
        t1 = time.perf_counter()
        s = sample_proposal(gen, crit, prop, min(a.repeat_seconds, budget), g)
        e = weighted_estimates(s["f"], s["w"], u, t_ref, s["group"])
        dt = max(time.perf_counter() - t1, 1e-9)
        est.append(e["exceedance"])
        ses.append(math.sqrt(e["exceedance_var"]))
        n_btgm.append(e["n"])
        rate_btgm.append(e["n"] / dt)
        ess_rate.append(e["ess_tail"] / dt)
        _, rs_seconds, rs_n = run_rejection(gen, crit, 1.0, seed=r)
        rate_rej.append(rs_n / rs_seconds)
    est, ses = np.array(est), np.array(ses)
    rate, r_btgm = float(np.mean(rate_rej)), float(np.mean(rate_btgm))
    var_rej = p_ref * (1 - p_ref) / (rate * a.seconds)
    var_btgm = float(np.var(est, ddof=1)) * float(np.mean(n_btgm)) / max(r_btgm * budget, 1.0)  # per-sample variance / N
    report("compare", f"u={u}: decoder throughput, rejection / BTGM (interleaved)", f"{rate:.0f} / {r_btgm:.0f}", "curves/s", "")
    report(
        "compare",
        f"u={u}: proposal tuning + refinement + pilots ({len(prop.flows)} flow(s))",
        round(t_train, 1),
        "s",
        f"< {a.seconds:g} s budget",
    )
    report(
        "compare",
        f"u={u}: relative error of the mean estimate over repeats",
        round(float(est.mean()) / p_ref - 1, 3),
        "",
        "about 0",
    )
    report(
        "compare",
        f"u={u}: variance ratio rejection/BTGM ({a.repeats} repeats)",
        round(var_rej / var_btgm, 1) if var_btgm > 0 else "inf",
        "x",
        ">= 100" if u > 0.999 else ">= 3",
    )
    # coverage: alone, and with the reference's own error (relative SE 1/sqrt(exceedances)) folded in
    covered = float(np.mean((est - Z95 * ses <= p_ref) & (p_ref <= est + Z95 * ses)))
    cover_ref = float(np.mean(np.abs(est - p_ref) <= Z95 * np.sqrt(ses**2 + se_ref**2)))
    # calibration: does each repeat's interval cover the mean of the other repeats (the estimator's own centre)?
    loo = (est.sum() - est) / (len(est) - 1)
    cover_loo = float(np.mean(np.abs(est - loo) <= Z95 * np.sqrt(ses**2 + np.var(est, ddof=1) / (len(est) - 1))))
    report("compare", f"u={u}: reference relative standard error", round(se_ref / p_ref, 4), "", "")
    report("compare", f"u={u}: BTGM 95% interval coverage of the reference value alone", round(covered, 2), "", "")
    report(
        "compare",
        f"u={u}: BTGM 95% interval coverage of the reference, its own error included",
        round(cover_ref, 2),
        "",
        "about 0.95",
    )
    report(
        "compare",
        f"u={u}: BTGM 95% interval coverage of the other repeats' mean (calibration)",
        round(cover_loo, 2),
        "",
        "about 0.95",
    )
    if ind is not None:
        if t_ref < float(ind["keep_above"]):
            raise SystemExit(
                f"{a.independent_reference} keeps peaks above {float(ind['keep_above'])} kW only; the level-{u} "
                f"threshold is {t_ref:.3f} kW: rerun big_reference.py with a lower --keep-above"
            )
        p_ind = float((ind["f"] >= t_ref).sum()) / int(ind["n"])
        se_ind = math.sqrt(p_ind * (1 - p_ind) / int(ind["n"]))
        report(
            "compare",
            f"u={u}: independent reference ({int(ind['n']):.0e} samples, seed {int(ind['seed'])}) and its relative SE",
            f"{p_ind:.4e} / {se_ind / p_ind:.4f}",
            "",
            "",
        )
        report(
            "compare",
            f"u={u}: relative error of the mean estimate against the independent reference",
            round(float(est.mean()) / p_ind - 1, 4),
            "",
            "about 0",
        )
        report(
            "compare",
            f"u={u}: BTGM 95% interval coverage of the independent reference value alone",
            round(float(np.mean(np.abs(est - p_ind) <= Z95 * ses)), 2),
            "",
            "about 0.95",
        )
    t_rej_10k = 10_000 / (rate * (1 - u))
    t_btgm_10k = t_train + 10_000 / float(np.mean(ess_rate))
    report(
        "compare",
        f"u={u}: seconds to 10,000 effective tail scenarios, rejection / BTGM",
        f"{t_rej_10k:.0f} / {t_btgm_10k:.0f}",
        "s",
        "",
    )
    report(
        "compare",
        f"u={u}: speed ratio for 10,000 effective tail scenarios",
        round(t_rej_10k / t_btgm_10k, 1),
        "x",
        ">= 20" if u > 0.999 else "",
    )
