"""The demo's models against the synthetic generator itself: what the card's test split cannot judge.

The card holds a model to the test weeks of its own data; on the demo that is 37 weeks, and its re-splits say
which targets so few weeks can judge. The demo's data comes from a generator that can make as many more weeks
as we like, of the same households: this script generates them (by default 1,300 weeks, 25 years, starting the
Monday after the demo's last week, same households, same seed, no defects), ingests them and cuts them into group
curves as `make demo` does, and prints, for groups of 10 and of 100 and per statistic, the KS and the q0.99 and
q0.999 errors of

- the demo's model (its generated weeks, decoder means: what BTGM tunes) against those weeks ("truth"),
- the demo's test split and its training split against the truth: how far the data the model learnt from, and
  the weeks the card judges it by, sit from the generator they came from;
- the truth carded as if it were a model: its weeks against the demo's test split, with the card's targets (KS,
  q0.99 and q0.999). A target that the generator itself misses against the test split is one that a model can
  meet only by being further from the generator.

Where the training split itself misses the truth, no model of those weeks can be held to it; the test split's
distance to the truth is the card's own error.

Usage: python benchmarks/bench_truth.py [--store data] [--work /tmp/btgm-truth] [--weeks 1300] [--models DIR]
(--models: other models of the same store, e.g. `energy-btgm train --seed 1 --out DIR/vae-n10`).
About 4 min on 2 cores (generation, ingest and curves 3 min 51 s, reused on a second run).
"""

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _common import report

from energy_btgm.data.config import CurvesConfig, IngestConfig, SynthConfig
from energy_btgm.data.curves import build, read_groups
from energy_btgm.data.ingest import ingest
from energy_btgm.data.synth import generate
from energy_btgm.model.card import TARGET_STATISTICS, check_targets, fit_numbers, statistics
from energy_btgm.model.train import features, load_splits
from energy_btgm.model.vae import load_model

ROOT = Path(__file__).resolve().parents[1]


KEYS = ("ks", "q99_rel_err", "q999_rel_err")
REPORTED = {"model": "model vs truth", "train": "training split vs truth", "carded": "generator vs test split"}  # BENCH lines


def against(truth: dict, sample: dict) -> dict:
    """The card's fit numbers (``fit_numbers``: KS, q0.99 and q0.999 relative errors) of ``sample``'s target
    statistics against the truth's."""
    return fit_numbers({k: truth[k] for k in TARGET_STATISTICS}, {k: sample[k] for k in TARGET_STATISTICS})


def met(fit: dict, n_test: int = 0) -> dict[str, bool]:
    """Per statistic, whether ``fit`` meets the card's targets (``check_targets``): KS and q0.99, and q0.999 where
    ``n_test`` reaches the card's threshold (left out by default)."""
    return {k: row["met"] for k, row in check_targets(fit, n_test=n_test)["by_statistic"].items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--store", default=str(ROOT / "data"), help="the demo store (after `make demo`: its synthetic data and models)"
    )
    ap.add_argument("--work", default="/tmp/btgm-truth", help="where the generator's further weeks go (reused when they match)")
    ap.add_argument("--models", help="folder of the models to hold to the truth, vae-n<N> each (default: the store's models)")
    ap.add_argument("--weeks", type=int, default=1300, help="weeks to generate beyond the demo's")
    ap.add_argument("--samples", type=int, default=20000, help="generated weeks per model and draw")
    ap.add_argument("--draws", type=int, default=5, help="draws of --samples weeks per model (the q0.999 is averaged over them)")
    a = ap.parse_args()
    store, work = Path(a.store), Path(a.work)

    synth_json = store / "raw" / "synthetic" / "synth.json"
    if not synth_json.exists():
        raise SystemExit(f"{synth_json} not found: run `make demo` first (or pass --store)")
    demo_cfg = json.loads(synth_json.read_text())["config"]
    start = (pd.Timestamp(demo_cfg["start"]) + pd.Timedelta(weeks=demo_cfg["weeks"])).strftime("%Y-%m-%d")
    cfg = dataclasses.replace(SynthConfig(**demo_cfg), start=start, weeks=a.weeks, defects=False)
    curves_cfg = json.loads((store / "curves" / "_manifest.json").read_text())["config"]
    sizes = tuple(curves_cfg["group_sizes"])

    truth = work / "store"
    stamp = work / "made.json"
    wanted = {"synth": dataclasses.asdict(cfg), "draws": curves_cfg["draws"], "group_sizes": list(sizes)}
    if not (stamp.exists() and json.loads(stamp.read_text()) == wanted):
        t = time.perf_counter()
        raw = truth / "raw" / "synthetic"
        generate(cfg, raw, overwrite=True, progress=True)
        ingest([raw / "readings"], truth, IngestConfig(fmt="long", tz=cfg.tz), reports=work / "reports", progress=True)
        # other groups than the demo's (another seed): the truth is the generator's, not the demo's draws
        build(
            truth,
            CurvesConfig(group_sizes=sizes, draws=curves_cfg["draws"], seed=curves_cfg["seed"] + 1),
            reports=work / "reports",
            progress=True,
        )
        stamp.write_text(json.dumps(wanted))
        report(
            "truth", f"generate, ingest and cut {a.weeks} weeks of {cfg.households} homes", round(time.perf_counter() - t, 1), "s"
        )

    rows = []
    for n in sizes:
        df = read_groups(truth, n)
        X = features(df)
        T = statistics(X[:, :-1], X[:, -1])
        data, weeks = load_splits(store, n)
        D = {s: statistics(data[s][:, :-1], data[s][:, -1]) for s in ("train", "test")}
        model = load_model(Path(a.models or store / "models") / f"vae-n{n}")
        G = [statistics(*model.sample(a.samples, seed=12345 + d)[:2]) for d in range(a.draws)]
        print(
            f"groups of {n}: truth {len(X):,} curves of {df['week_start'].nunique()} weeks ({start} on); the demo's "
            f"training split {len(np.unique(weeks['train']))} weeks, test split {len(np.unique(weeks['test']))} weeks"
        )
        draws = [against(T, g) for g in G]
        fits = {
            "model": {key: {k: float(np.mean([f[key][k] for f in draws])) for k in TARGET_STATISTICS} for key in KEYS},
            "train": against(T, D["train"]),
            "test": against(T, D["test"]),
            "carded": against(D["test"], T),  # the truth as the model, the test split as the real weeks: the card's view
        }
        # the card's targets: KS and q0.99 against the truth; held to the test split as a card is, q0.999 too
        ok = {who: met(fits[who]) for who in ("model", "train")} | {"carded": met(fits["carded"], n_test=len(data["test"]))}
        for name in TARGET_STATISTICS:
            row = {who: [fit[key][name] for key in KEYS] for who, fit in fits.items()}
            rows.append((n, name, row, {who: ok[who][name] for who in ok}))
            for who, what in REPORTED.items():
                report("truth", f"n{n} {name}: {what} (KS, q0.99, q0.999)", [round(v, 3) for v in row[who]], "")

    print(
        f"\n{'n':>4}  {'statistic':18}  {'model vs truth: KS':>18} {'q0.99':>7} {'q0.999':>7}  {'targets':7}   "
        f"{'training split: KS':>18} {'q0.99':>7} {'q0.999':>7}  {'targets':7}   "
        f"{'test split: KS':>14} {'q0.99':>7} {'q0.999':>7}"
    )
    verdict = {True: "met", False: "MISSED"}
    for n, name, row, ok in rows:
        m, tr, te = row["model"], row["train"], row["test"]
        print(
            f"{n:4d}  {name:18}  {m[0]:18.3f} {m[1]:+7.1%} {m[2]:+7.1%}  {verdict[ok['model']]:7}   "
            f"{tr[0]:18.3f} {tr[1]:+7.1%} {tr[2]:+7.1%}  {verdict[ok['train']]:7}   {te[0]:14.3f} {te[1]:+7.1%} {te[2]:+7.1%}"
        )
    print(
        f"\nThe model's numbers are the means over {a.draws} draw{'s' if a.draws > 1 else ''} of {a.samples:,} generated weeks. "
        "'targets': KS <= 0.08 and q0.99 within 5 % (the card's, held here to the truth instead of the test split)."
    )
    print(f"\nThe generator carded as if it were the model: its {a.weeks} weeks held to the demo's test split, as the card does")
    head = f"{'n':>4}  {'statistic':18}  {'KS':>6} {'q0.99':>7} {'q0.999':>7}"
    print(f"{head}  targets (KS <= 0.08; q0.99 within 5 %; q0.999, 10 %)")
    for n, name, row, ok in rows:
        c = row["carded"]
        print(f"{n:4d}  {name:18}  {c[0]:6.3f} {c[1]:+7.1%} {c[2]:+7.1%}  {verdict[ok['carded']]}")


if __name__ == "__main__":  # ingest cleans in worker processes, which import this file
    main()
