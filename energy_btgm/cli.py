"""The ``energy-btgm`` command line: one subcommand per pipeline step, all under one store.

Every subcommand reads and writes under the store (``--store DIR``, or $ENERGY_BTGM_STORE, default
``data/``); reports go to ``--reports DIR`` (default ``reports/``). Exit codes: 0 success; 2 a bad
argument or option value (nothing is written); 1 the data or the store is not what the step needs,
or the step failed. Errors are one line naming the step, the file or field, and the fix; a
traceback only with ``--debug``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import uuid
from pathlib import Path

from energy_btgm import __version__
from energy_btgm.data.config import CurvesConfig, IngestConfig, SynthConfig
from energy_btgm.errors import EXPECTED, ParameterError
from energy_btgm.grid.config import StudyConfig
from energy_btgm.model.config import TrainConfig
from energy_btgm.store import STORE_ENV, atomic_write_text, store_lock, store_root

# the subcommands whose options are fields of a config dataclass: their defaults are read from it
CONFIGS = {"synth": SynthConfig, "ingest": IngestConfig, "curves": CurvesConfig, "train": TrainConfig, "grid-study": StudyConfig}


class UsageError(Exception):
    """A bad argument found by the command line itself: reported in one line, exit code 2."""


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--store", metavar="DIR", default=None, help=f"store root for data, models and banks (default: ${STORE_ENV} or data/)"
    )
    p.add_argument("--reports", metavar="DIR", default="reports", help="where reports go (default: reports/)")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")


def _show(value) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _option(p: argparse.ArgumentParser, cls, field: str, *flags: str, help: str, default_text: str | None = None, **kw) -> None:
    """An option for field ``field`` of the config dataclass ``cls``, its default read from the dataclass
    (so that it lives in one place) and shown in the help; a False boolean becomes a flag."""
    default = {f.name: f.default for f in dataclasses.fields(cls)}[field]
    if isinstance(default, tuple):
        default = list(default)
        kw.setdefault("nargs", "+")
        kw.setdefault("type", type(default[0]))
    elif isinstance(default, bool):
        kw.setdefault("action", "store_true")
    elif default is not None:
        kw.setdefault("type", type(default))
    shown = "" if kw.get("action") == "store_true" else f" (default: {default_text or _show(default)})"
    p.add_argument(*(flags or ("--" + field.replace("_", "-"),)), dest=field, default=default, help=help + shown, **kw)


def _config(cls, args: argparse.Namespace):
    """The config dataclass ``cls`` from the parsed options (its fields that are options)."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in given.items()})


def _criterion(name: str):
    """The named criterion, or a usage error listing the known ones."""
    import criteria

    try:
        return criteria.get(name)
    except KeyError as e:
        raise UsageError(str(e).strip("'\"")) from None


def _model_dir(args: argparse.Namespace, store: Path) -> Path:
    """--model, else the store's model for --group-size (a clear error when there is none)."""
    from energy_btgm.model.train import latest_model

    return Path(args.model) if args.model else latest_model(store, args.group_size)


def _group_size_of(model_dir: Path, default: int) -> int:
    """The group size a model was trained on (its model.json), which names the output folders."""
    try:
        return int(json.loads((Path(model_dir) / "model.json").read_text())["group_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return default  # load_model reports what is wrong with the model


def _cmd_synth(args: argparse.Namespace) -> int:
    from energy_btgm.data.synth import generate

    if args.describe:
        from energy_btgm.data.describe import check, describe, format_check

        path = Path(args.describe)
        if not path.exists():
            raise UsageError(f"--describe {path}: no such file or folder; generate one with `energy-btgm synth`")
        stats = describe(path, seed=args.seed)
        print(format_check(stats))
        if args.json:
            atomic_write_text(Path(args.json), json.dumps(stats, indent=2))
        bad = [r[0] for r in check(stats) if not r[-1]]
        print(f"{len(bad)} statistic(s) out of range: {', '.join(bad)}" if bad else "all statistics in range")
        return 1 if bad else 0

    cfg = _config(SynthConfig, args)
    cfg.validate()
    out = Path(args.out) if args.out else store_root(args.store) / "raw" / "synthetic"
    if out.exists() and not args.overwrite:
        raise UsageError(f"--out {out} already exists; pass --overwrite to replace it, or choose another --out")
    record = generate(cfg, out, overwrite=args.overwrite, progress=not args.quiet)
    print(
        f"wrote {record['rows']:,} readings of {cfg.households} households, {cfg.weeks} weeks at {cfg.resolution} "
        f"to {out}" + (f" (defects injected: {record['defects_injected']})" if cfg.defects else "")
    )
    return 0


def _cmd_ingest(args: argparse.Namespace) -> int:
    from energy_btgm.data.ingest import ingest

    cfg = _config(IngestConfig, args)
    cfg.validate()
    sources = args.sources or [str(store_root(args.store) / "raw" / "synthetic" / "readings")]
    missing = [s for s in sources if not Path(s).exists()]
    if missing:
        raise UsageError(f"SOURCE {missing[0]}: no such file or folder; name meter files or folders that exist")
    m = ingest(
        sources, store_root(args.store), cfg, reports=Path(args.reports), progress=not args.quiet, partitions=args.partitions
    )
    c = m["counts"]
    print(
        f"ingested {len(m['sources'])} file(s): {c['rows_in']:,} rows in = {c['rows_kept']:,} kept + "
        f"{c['rows_quarantined']:,} quarantined; {c['rows_repaired_filled']:,} filled; {m['meters']} meters; "
        f"{m['date_range'][0] if m['date_range'] else '-'} .. {m['date_range'][1] if m['date_range'] else '-'}"
    )
    if c["quarantined_by_reason"]:
        print("  quarantined by reason: " + ", ".join(f"{k} {v:,}" for k, v in c["quarantined_by_reason"].items()))
    print(f"  DST: {c['dst_ambiguous_resolved']:,} ambiguous resolved, {c['dst_nonexistent_shifted']:,} nonexistent shifted")
    if m["validation"]:
        v = m["validation"]
        print(
            f"  validation {'passed' if v['success'] else 'FAILED'}: {v['evaluated']} expectations over {v['chunks']} "
            f"chunk(s) -> {v['result_file']}"
        )
    print(f"  readings: {store_root(args.store) / 'readings'}   quarantine: {m['quarantine_file']}   ({m['seconds']} s)")
    return 0


def _cmd_curves(args: argparse.Namespace) -> int:
    from energy_btgm.data.curves import build

    cfg = _config(CurvesConfig, args)
    cfg.validate()
    m = build(
        store_root(args.store),
        cfg,
        weather=Path(args.weather) if args.weather else None,
        reports=Path(args.reports),
        progress=not args.quiet,
    )
    print(
        f"household weekly curves: {m['household_weeks_kept']:,} kept, {m['household_weeks_excluded']:,} excluded "
        f"(> {cfg.max_missing:.0%} missing or filled); {m['points_per_week']} points per week"
    )
    for n, g in m["groups"].items():
        print(
            f"  groups of {n}: {g['rows']:,} curves over {g['weeks']} weeks; DF median {g['df_p50']:.2f}, "
            f"ADMD median {g['admd_kw_p50']:.2f} kW, peak median {g['peak_kw_p50']:.1f} kW, p99 {g['peak_kw_p99']:.1f} kW"
        )
    print("  split by week: " + ", ".join(f"{k} {len(v)}" for k, v in m["split"].items()))
    if m["validation"]:
        print(f"  validation {'passed' if m['validation']['success'] else 'FAILED'} -> {m['validation']['result_file']}")
    print(f"  curves: {store_root(args.store) / 'curves'}   ({m['seconds']} s)")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from energy_btgm.model.train import train

    cfg = _config(TrainConfig, args)
    cfg.validate()
    out = train(
        store_root(args.store),
        cfg,
        out=Path(args.out) if args.out else None,
        resume=args.resume,
        progress=not args.quiet,
        curves_dir=Path(args.curves) if args.curves else None,
    )
    card = json.loads((out / "card.json").read_text())
    print(f"model: {out}  ({card['epochs_run']} epochs, {card['train_seconds']:.0f} s; test ELBO {card['test_elbo']:.1f} nats)")
    pf = card.get("prior_fit") or {}
    if len(pf.get("prior_val_nll", {})) > 1:
        se = pf.get("prior_val_nll_se", {})
        nll = ", ".join(f"{h}: {v:.2f}" + (f" ± {se[h]:.2f}" if h in se else "") for h, v in pf["prior_val_nll"].items())
        print(
            f"  latent prior: smoothing {pf['prior_smoothing']:g} kept, the widest within one standard error of the best "
            f"(validation NLL by smoothing, nats, ± the standard error of its difference from the best's: {nll})"
        )
    for label, fit in (
        ("fit on the test split", card),
        ("baseline, training split vs test split", card["train_vs_test"]),
        ("in sample, generated vs training split", card["generated_vs_train"]),
        ("draws x ~ p(x|z), noise included (not what BTGM tunes)", card["drawn_with_noise"]),
    ):
        print(
            f"  {label} (KS | q0.99 rel. err.): "
            + ", ".join(f"{k} {fit['ks'][k]:.3f} | {fit['q99_rel_err'][k]:+.1%}" for k in fit["ks"])
        )
    if "tail_weeks" in card:
        tw = card["tail_weeks"]
        print(
            "  weeks behind the tails (q0.99 / q0.999 of the training | test split): "
            + ", ".join(
                f"{k} {tw['train'][k]['q99']} / {tw['train'][k]['q999']} | {v['q99']} / {v['q999']}"
                for k, v in tw["test"].items()
            )
        )
    t = card["targets"]
    print(f"  targets ({t['text']}): " + ("met" if t["met"] else f"NOT met: {t['missed_text']}"))
    if not t["baseline"]["met"]:
        print(f"  the training weeks themselves miss them against the test weeks: {t['baseline']['missed_text']}")
    if "split_noise" in t:
        sn, judged = t["split_noise"], t["missed_where_the_split_can_tell"]
        print(
            f"  what {sn['test_weeks']} test weeks can judge: over {sn['resplits']} re-splits of the {sn['weeks']} weeks "
            f"the data itself misses {sn['text']}; where the split can tell, the targets are "
            + ("met" if not judged else f"NOT met: {', '.join(judged)}")
        )
        print(f"  {t['data_verdict_text']}")
    print(f"  model card: {out / 'card.html'}")
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    from energy_btgm.model.sample import write_samples
    from energy_btgm.model.vae import load_model

    if args.n < 1:
        raise UsageError(f"-n must be at least 1, got {args.n}")
    store = store_root(args.store)
    model_dir = _model_dir(args, store)
    gen = load_model(model_dir)
    out = Path(args.out) if args.out else store / "banks" / f"samples-{model_dir.name}.parquet"
    write_samples(gen, args.n, out, seed=args.seed)
    print(f"wrote {args.n:,} generated curves from {model_dir} to {out}")
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from energy_btgm.tuning.engine import TuneConfig
    from energy_btgm.tuning.run import tune_criterion

    _criterion(args.criterion)
    store = store_root(args.store)
    model_dir = _model_dir(args, store)
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=TuneConfig.max_iter, desc=f"tune {args.criterion}", unit=" β")

    def show(ev):
        if bar is not None:
            bar.update(1)
            bar.set_postfix(beta=f"{ev['beta']:.3f}", kl=f"{ev['kl']:.3f}")

    try:
        s = tune_criterion(
            store,
            args.criterion,
            model_dir,
            top_fraction=args.top_fraction,
            target_kl=args.target_kl,
            target_mean=args.target_mean,
            seed=args.seed,
            n_bank=args.n,
            progress=show,
            warm=not args.cold,
        )
    finally:
        if bar is not None:
            bar.close()
    print(
        f"{s['criterion']} on groups of {s['group_size']}: β = {s['beta']:.3f} (normalised criterion), "
        f"KL = {s['kl']:.3f} (target {s['target_kl'] if s['target_kl'] is not None else '-'}), "
        f"E f = {s['mean_f']:.2f} {s['unit']} vs {s['mean_f_under_p']:.2f} under p, "
        f"Pareto efficiency {s['pareto_efficiency']:.3f}, {s['seconds']:.0f} s"
        + ("" if s["converged"] else "  [β search did NOT converge]")
        + (f"  [warm start from {s['warm_start']['run']}]" if s["warm_start"] else "")
    )
    print(f"  flow, summary and figures: {s['flow_dir']}   bank: {s['bank']}")
    print(f"  the bank is good for: {s['bank_weights']['good_for']}")
    return 0


def _cmd_assess(args: argparse.Namespace) -> int:
    from energy_btgm.tuning.assess import assess

    for name in [args.criterion, *(args.variants or [])]:
        _criterion(name)
    store = store_root(args.store)
    model_dir = _model_dir(args, store)
    out = Path(args.reports) / "assess" / f"{args.criterion}-n{_group_size_of(model_dir, args.group_size)}"
    r = assess(model_dir, args.criterion, out, n=args.n, seed=args.seed, variants=args.variants)
    print(f"{args.criterion}: gradient norms of the normalised variants over {args.n:,} samples of p")
    for name, v in r["variants"].items():
        print(
            f"  {name:<28} near-zero {v['share_near_zero']:6.1%}   p99/median {v['p99_over_median']:6.2f}"
            + ("   <- recommended" if name == r["recommended"] else "")
        )
    print(f"  figure: {r['figure']}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from energy_btgm.outputs import simulators
    from energy_btgm.outputs.export import export

    if args.format in simulators.FORMATS:
        out = Path(args.out) if args.out else Path(args.bank).with_name(f"export-{args.format}")
        simulators.export_simulator(
            Path(args.bank),
            out,
            args.format,
            week_start=args.week_start,
            scenarios=args.scenarios,
            grid=args.grid,
            growth=args.growth,
            power_factor=args.power_factor,
        )
        print(f"wrote {out}/ ({args.format}; see export.json)")
        return 0
    ext = {"long-csv": ".csv", "wide-csv": ".csv", "long-parquet": ".parquet"}.get(args.format, "")
    out = Path(args.out) if args.out else Path(args.bank).with_name(f"export-{args.format}{ext}")
    export(Path(args.bank), out, fmt=args.format, week_start=args.week_start)
    print(f"wrote {out}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from energy_btgm.estimate.comparison import compare, out_dir_for

    _criterion(args.criterion)
    store = store_root(args.store)
    model_dir = _model_dir(args, store)
    out = out_dir_for(Path(args.reports), args.criterion, _group_size_of(model_dir, args.group_size))
    r = compare(
        model_dir,
        args.criterion,
        args.levels,
        args.seconds,
        out,
        store / "reference",
        seed=args.seed,
        n_reference=args.reference_samples,
        progress=not args.quiet,
        proposal=args.proposal,
    )
    print(
        f"{args.criterion} on groups of {r['group_size']}, {args.seconds:g} s per method "
        f"(reference: {r['reference_samples']:,} samples of p)"
    )
    print(
        f"  {'level':>8} {'reference':>10} {'rejection [95% CI]':>28} {'BTGM [95% CI]':>28} {'var ratio':>10} "
        f"{'10k tail s (rej/btgm)':>22}"
    )
    for u, e in r["levels"].items():
        rj, bt = e["rejection"], e["btgm"]
        ratio = e["variance_ratio_rejection_over_btgm"]
        print(
            f"  {u:>8} {e['reference']['quantile']:10.3f} "
            f"{rj['quantile']:9.3f} [{rj['quantile_ci'][0]:7.3f},{rj['quantile_ci'][1]:7.3f}] "
            f"{bt['quantile']:9.3f} [{bt['quantile_ci'][0]:7.3f},{bt['quantile_ci'][1]:7.3f}] "
            f"{ratio if ratio is None else round(ratio, 1)!s:>10} "
            f"{rj['seconds_per_10k_effective_tail']:10.0f}/{bt['seconds_per_10k_effective_tail']:<10.0f}"
        )
    for u, e in r["levels"].items():
        for problem in e["btgm"]["weight_problems"]:
            print(f"  warning: level {u}: BTGM's weights: {problem}; raise --seconds, or check the proposal", file=sys.stderr)
    print(f"  compare.json: {out / 'compare.json'}")
    return 0


def _cmd_grid_study(args: argparse.Namespace) -> int:
    from energy_btgm.grid.study import latest_bank, study_bank

    cfg = _config(StudyConfig, args)
    bank_path = Path(args.bank) if args.bank else latest_bank(store_root(args.store), args.criterion, args.group_size)
    result = study_bank(bank_path, cfg, Path(args.reports), Path(args.out) if args.out else None, progress=not args.quiet)
    path = result["study_json"]
    g = result["grid_summary"]
    print(
        f"grid study: {result['grid']} ({g['buses']} buses, {g['loads']} loads, transformer "
        f"{', '.join(f'{r:g}' for r in g['trafo_rating_kva'])} kVA); {result['criterion']} bank of groups of "
        f"{result['group_size']}, demand x {cfg.growth:g}, power factor {cfg.power_factor:g}"
    )
    if result["fit_note"]:
        print(f"  note: {result['fit_note']}")
    b = result["bank_study"]
    print(
        f"  bank: {b['scenarios']:,} weeks in {b['seconds']:.1f} s ({b['scenarios_per_second'] * 336:,.0f} power flows/s); "
        + (
            "weights trusted for the overload estimate"
            if b["reliable"]
            else "weights NOT trusted for the overload estimate: " + "; ".join(b["problems"])
        )
    )
    bt, rj = result["btgm"], result["rejection"]
    print(f"  BTGM's estimate: {bt['method']} ({bt['why']})")
    if b.get("tune_seconds"):
        print(f"  (the bank's tune took {b['tune_seconds']:.0f} s before the study; not counted in BTGM's time)")
    limits = {
        "trafo_overload": f"transformer above {cfg.trafo_limit:g} %",
        "voltage_out_of_band": f"a bus outside {cfg.v_min:g}-{cfg.v_max:g} pu",
    }
    for event, text in limits.items():
        print(f"  P({text}) per week:")
        for name, part in (("BTGM", bt), ("rejection", rj)):
            e = part["estimates"][event]
            print(
                f"    {name:<10} {e['p']:.3g} [95% CI {e['ci'][0]:.3g}, {e['ci'][1]:.3g}]  "
                f"({part['seconds']:.0f} s, {part['scenarios']:,} weeks, {e['hits']:,} with the event"
                + (
                    f"; weights ESS {e['ess']:.0f}, Pareto k̂ {'n/a' if e['pareto_k'] is None else format(e['pareto_k'], '.2f')}"
                    + ("" if e["reliable"] else ": NOT reliable")
                    if name == "BTGM" and result["bank_study"]["tuned"]
                    else ""
                )
                + ")"
            )
    if result["failures"]["count"]:
        first = result["failures"]["first"][0]
        print(
            f"  warning: {result['failures']['count']} power flows did not converge (first: {first['source']} scenario "
            f"{first['scenario_id']} at {first['time']}); they are listed in study.json and left out of their weeks",
            file=sys.stderr,
        )
    print(f"  study.json: {path}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from energy_btgm.outputs.report import build, ratio_text

    path = build(store_root(args.store), Path(args.reports), run=args.run)
    summary = json.loads((path.parent / "summary.json").read_text())
    for key, t in summary.get("tuned", {}).items():
        print(
            f"  {key:<24} β {t['beta']:.3f}  KL {t['kl']:.3f}  E f {t['mean_f']:.2f} vs {t['mean_f_under_p']:.2f} {t['unit']} "
            f"under p  Pareto efficiency {t['pareto_efficiency']:.3f}"
        )
    for key, c in summary.get("compare", {}).items():
        for u, e in c["levels"].items():
            print(
                f"  {key} q{u}: reference {e['reference']['quantile']:.3f}, rejection {e['rejection']['quantile']:.3f}, "
                f"BTGM {e['btgm']['quantile']:.3f} {c['unit']}; variance ratio rejection/BTGM "
                f"{ratio_text(e['variance_ratio_rejection_over_btgm'])}"
            )
    print(f"report: {path.resolve()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="energy-btgm",
        description="Extreme-but-plausible electricity load scenarios by Boltzmann Tuning of Generative Models.",
        epilog="Store layout: raw/ readings/ quarantine/ curves/ models/ banks/ under --store; reports under --reports.",
    )
    parser.add_argument("--version", action="version", version=f"energy-btgm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "synth",
        help="generate a realistic synthetic household meter data set (or --describe one)",
        description="Generate synthetic household smart-meter readings (long format, chunked Parquet) "
        "with a household table and a daily temperature table; or, with --describe PATH, "
        "print the statistics of a data set against published smart-meter trial ranges.",
    )
    _add_common(p)
    _option(p, SynthConfig, "households", metavar="N", help="number of households")
    _option(p, SynthConfig, "start", help="first Monday, local date YYYY-MM-DD")
    _option(p, SynthConfig, "weeks", metavar="W", help="number of weeks")
    _option(p, SynthConfig, "resolution", help="interval: 15min, 30min or 60min")
    _option(p, SynthConfig, "tz", help="IANA time zone of the meters")
    _option(p, SynthConfig, "seed", metavar="S", help="random seed")
    _option(p, SynthConfig, "heating_share", help="share of electrically heated homes")
    _option(p, SynthConfig, "ev_share", help="share of homes with an EV")
    _option(
        p,
        SynthConfig,
        "defects",
        help="inject export defects: gaps, duplicates (some conflicting), stuck-at-zero, "
        "a negative reading, naive local timestamps with DST as exported",
    )
    p.add_argument("--out", metavar="PATH", help="output folder (default: <store>/raw/synthetic/)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--describe", metavar="PATH", help="print statistics of the data set at PATH instead of generating")
    p.add_argument("--json", metavar="OUT", help="with --describe: also write the statistics as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser(
        "ingest",
        help="validate and clean meter files into the canonical readings",
        description="Read meter files (CSV, gzip CSV, Parquet) in bounded memory, clean them (duplicates, "
        "bad values, DST, gaps up to --max-gap-h), validate with Great Expectations, and write "
        "<store>/readings (partitioned Parquet + manifest.json) and <store>/quarantine.",
    )
    _add_common(p)
    p.add_argument("sources", nargs="*", metavar="SOURCE", help="files or folders (default: <store>/raw/synthetic/readings)")
    _option(
        p,
        IngestConfig,
        "fmt",
        "--format",
        choices=["long", "lcl", "wide"],
        help="long: meter,timestamp,value; lcl: Low Carbon London (datastore or per-block); "
        "wide: timestamp + one column per meter (UCI)",
    )
    _option(
        p,
        IngestConfig,
        "tz",
        help="the meters' local time zone: weekly curves start Monday 00:00 there; also the "
        "zone of naive timestamps unless --source-tz says otherwise",
    )
    _option(
        p,
        IngestConfig,
        "source_tz",
        help="time zone of the files' naive timestamps when it is not the meters' (UTC for Low Carbon London exports)",
        default_text="--tz",
    )
    _option(p, IngestConfig, "unit", choices=["kwh", "wh", "kw"], help="unit of values", default_text="kw for wide, else kwh")
    _option(p, IngestConfig, "resolution", help="auto, 15min, 30min or 60min; coarser than native sums")
    _option(p, IngestConfig, "meter_col", help="long format: meter id column")
    _option(p, IngestConfig, "time_col", help="long format: timestamp column")
    _option(p, IngestConfig, "value_col", help="long format: value column")
    _option(p, IngestConfig, "delimiter", help="CSV delimiter", default_text="',' or ';' for wide")
    _option(p, IngestConfig, "max_kwh_per_30min", help="plausibility bound, scaled by the interval")
    _option(p, IngestConfig, "max_gap_h", help="fill gaps up to this many hours linearly")
    _option(
        p,
        IngestConfig,
        "stuck_hours",
        help="quarantine a meter's run of zeros or of one repeated value longer than this (stuck_zero, stuck_constant; 0: off)",
    )
    p.add_argument(
        "--partitions",
        type=int,
        default=None,
        help="split households into this many partitions, cleaned in parallel (default: one per ~2 M rows)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_ingest)

    p = sub.add_parser(
        "curves",
        help="household and group weekly curves with diversity factor",
        description="Build household weekly curves (kW, Monday 00:00 local) from <store>/readings and "
        "group curves of random households per week with DF and ADMD; split weeks into "
        "train/validation/test; validate with Great Expectations; write <store>/curves.",
    )
    _add_common(p)
    _option(p, CurvesConfig, "group_sizes", metavar="N", help="group sizes")
    _option(p, CurvesConfig, "draws", metavar="R", help="random groups per week and size")
    _option(p, CurvesConfig, "seed", metavar="S", help="random seed")
    _option(p, CurvesConfig, "max_missing", help="exclude household-weeks with a larger share missing or filled")
    p.add_argument(
        "--weather", metavar="PATH", help="daily temperature Parquet (date, temp_c); default: the synthetic one if present"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_curves)

    p = sub.add_parser(
        "train",
        help="train the residual VAE of group weekly curves and write its model card",
        description="Train a VAE (10 residual blocks in the encoder and in the decoder) on the group curves "
        "of one size; checkpoint every epoch (--resume continues a killed run); write "
        "<store>/models/vae-nN with weights, config, scaler, history and a model card.",
    )
    _add_common(p)
    _option(p, TrainConfig, "group_size", metavar="N", help="which group curves to model")
    _option(p, TrainConfig, "latent_dim", help="latent dimensions")
    _option(p, TrainConfig, "hidden", help="width of the residual blocks")
    _option(p, TrainConfig, "epochs", metavar="E", help="maximum epochs, with early stopping on the validation ELBO")
    _option(p, TrainConfig, "kl_warmup_epochs", metavar="E", help="epochs over which the KL weight rises linearly to 1")
    _option(p, TrainConfig, "patience", metavar="E", help="epochs without a better validation ELBO (KL weight 1) before stopping")
    _option(p, TrainConfig, "batch_size", help="batch size")
    _option(p, TrainConfig, "lr", help="AdamW learning rate")
    _option(p, TrainConfig, "power", help="model kW ** POWER, so that slot-level spikes are close to Gaussian (1: plain kW)")
    _option(
        p,
        TrainConfig,
        "heteroscedastic",
        help="observation variance per feature and latent (default: per feature; decoder means stay smoother with it)",
    )
    _option(
        p,
        TrainConfig,
        "prior_transforms",
        metavar="K",
        help="coupling layers of the latent prior flow fitted after training (0: N(0, I))",
    )
    _option(
        p,
        TrainConfig,
        "prior_smoothing",
        metavar="H",
        help="the prior flow is fitted to the training weeks' posteriors, each widened to a std of at least H (a kernel "
        "bandwidth in latent units), once per H given, and the widest H whose validation NLL is within one standard "
        "error of the best is kept: large groups' weeks are tight clusters that a flow fitted to them as they are "
        "learns one by one; 0: as encoded",
    )
    _option(
        p,
        TrainConfig,
        "joint_prior",
        help="train the latent prior flow with the VAE (the KL term is taken to it) instead of fitting it afterwards",
    )
    _option(
        p,
        TrainConfig,
        "stat_weight",
        metavar="W",
        help="every statistic of --statistics is also observed W times as that statistic of the decoder mean, "
        "so that generated curves carry real peaks, gaps, volatility and diversity (0: off)",
    )
    _option(
        p,
        TrainConfig,
        "stat_sd_max",
        metavar="S",
        help="cap on each statistic's learned residual std in that term, in the statistic's training stds, so that "
        "none is fitted loosely by calling it noise (the diversity factor, which the latent carries least, takes "
        "0.54 on London's 10-home groups without one; the README gives what the default 0.25 changed); 0: no cap",
    )
    _option(
        p,
        TrainConfig,
        "statistics",
        metavar="NAMES",
        help="the statistics of that term: 'all' (every registered criterion and the diversity factor) or "
        "names, comma-separated (e.g. weekly-peak)",
    )
    _option(p, TrainConfig, "seed", metavar="S", help="random seed")
    _option(p, TrainConfig, "device", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint of an interrupted run")
    p.add_argument("--curves", metavar="PATH", help="folder holding groups-nN.parquet (default: <store>/curves)")
    p.add_argument("--out", metavar="DIR", help="model directory (default: <store>/models/vae-nN)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser(
        "sample",
        help="write generated curves of a trained model as Parquet",
        description="Draw N latents from the prior, decode them, and write the curves with their peak, "
        "energy, sum of member peaks, diversity factor, ADMD and latent log-density.",
    )
    _add_common(p)
    p.add_argument("model", nargs="?", help="model directory (default: the store's model for --group-size)")
    p.add_argument("--group-size", type=int, default=10, metavar="N", help="without MODEL: which model (default: 10)")
    p.add_argument("-n", type=int, default=10_000, help="number of curves (default: 10000)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default: 0)")
    p.add_argument("--out", metavar="PATH", help="output Parquet (default: <store>/banks/samples-<model>.parquet)")
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser(
        "tune",
        help="BTGM: tune a trained model toward a criterion (top fraction, KL or mean target)",
        description="Learn a normalizing flow on the latent space of a trained VAE so that samples follow "
        "q(x) ∝ p(x)·exp(β f(x)), β searched to hit the target; measure the result against the "
        "theoretical Pareto front; write the flow, summary.json, figures and a bank of tuned "
        "scenarios under the store.",
    )
    _add_common(p)
    p.add_argument(
        "criterion",
        help="a registered criterion (weekly-peak, wednesday-gap, mae-flatness, mae-flatness-min, "
        "weekly-energy, wednesday-mean) or package.module:function",
    )
    p.add_argument("--model", metavar="DIR", help="model directory (default: the store's model for --group-size)")
    p.add_argument("--group-size", type=int, default=10, metavar="N", help="without --model: which model (default: 10)")
    target = p.add_mutually_exclusive_group()
    target.add_argument(
        "--top-fraction",
        type=float,
        default=None,
        metavar="RHO",
        help="target the top fraction RHO of p: KL = -log RHO (default when no target: 0.01)",
    )
    target.add_argument("--target-kl", type=float, default=None, metavar="K", help="target KL(q||p) in nats")
    target.add_argument("--target-mean", type=float, default=None, metavar="M", help="target E_q f in the criterion's units")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default: 0)")
    p.add_argument("-n", type=int, default=10_000, help="tuned scenarios written to the bank (default: 10000)")
    p.add_argument(
        "--cold",
        action="store_true",
        help="train the flow from scratch (default: start from the store's cached flow of this criterion and model, if any)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_tune)

    p = sub.add_parser(
        "assess",
        help="compare equivalent variants of a criterion before tuning (gradient norms)",
        description="Normalise each variant of the criterion under p, estimate the distribution of the "
        "gradient norm in latent space on samples of p, plot it, summarise it and recommend "
        "the variant that should train best (paper section 4.2).",
    )
    _add_common(p)
    p.add_argument("criterion", help="weekly-peak (hard max, smooth max, log of the peak) or any registered criterion")
    p.add_argument("--model", metavar="DIR", help="model directory (default: the store's model for --group-size)")
    p.add_argument("--group-size", type=int, default=10, metavar="N", help="without --model: which model (default: 10)")
    p.add_argument(
        "--variants",
        nargs="+",
        metavar="NAME",
        help="compare these instead: registered criteria or package.module:function (training version)",
    )
    p.add_argument("-n", type=int, default=10_000, help="samples of p (default: 10000)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default: 0)")
    p.set_defaults(func=_cmd_assess)

    p = sub.add_parser(
        "export",
        help="export a scenario bank as a timestamped table for grid simulators",
        description="Write a bank's weekly curves as (scenario_id, timestamp, load_kw) rows (long-csv, "
        "long-parquet) or one column per scenario (wide-csv), laid on the week of --week-start.",
    )
    _add_common(p)
    p.add_argument("bank", help="bank file or folder (e.g. data/banks/criterion=weekly-peak/group_size=10)")
    p.add_argument(
        "--format",
        default="long-csv",
        help="tables: long-csv, wide-csv, long-parquet; simulators (a folder each): pypsa, opendss, gridlabd, "
        "pandapower (needs --grid; pip install 'energy-btgm[grid]'). Layouts and units: README (default: long-csv)",
    )
    p.add_argument("--week-start", default="2024-01-01", help="Monday on which to lay the weeks (default: 2024-01-01)")
    p.add_argument(
        "--scenarios", type=int, default=None, metavar="N", help="simulator formats: the first N scenarios (default: all)"
    )
    _option(p, StudyConfig, "grid", help="pandapower format: the grid whose loads take the curves, as in grid-study")
    _option(p, StudyConfig, "growth", metavar="X", help="pandapower format: demand growth factor")
    _option(p, StudyConfig, "power_factor", metavar="PF", help="pandapower format: power factor of the loads")
    p.add_argument("--out", metavar="PATH", help="output file or folder (default: beside the bank)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser(
        "compare",
        help="BTGM against rejection sampling on extreme quantiles, at equal wall-clock budget",
        description="Estimate upper quantiles and exceedance probabilities of a criterion under p by "
        "rejection sampling (crude Monte-Carlo) and by BTGM importance sampling (flow training "
        "included), each within --seconds, against a cached reference of >= 10^7 samples of p.",
    )
    _add_common(p)
    p.add_argument("--criterion", default="weekly-peak", help="criterion to estimate (default: weekly-peak, hard max)")
    p.add_argument("--model", metavar="DIR", help="model directory (default: the store's model for --group-size)")
    p.add_argument("--group-size", type=int, default=10, metavar="N", help="without --model: which model (default: 10)")
    p.add_argument(
        "--levels", type=float, nargs="+", default=[0.99, 0.999, 0.9999], help="quantile levels (default: 0.99 0.999 0.9999)"
    )
    p.add_argument(
        "--seconds", type=float, default=60.0, metavar="S", help="wall-clock budget per method and level (default: 60)"
    )
    p.add_argument("--reference-samples", type=int, default=10_000_000, help="reference size (default: 10^7; cached)")
    p.add_argument(
        "--proposal",
        choices=["modes", "flows"],
        default="modes",
        help="BTGM's proposal: the mode-finding cross-entropy mixture (default; estimate/modes.py) or a tuned flow "
        "with defensive components (estimate/proposal.py)",
    )
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default: 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser(
        "grid-study",
        help="power flows of a bank's weeks on a low-voltage grid: transformer overload and voltage risk under p",
        description="Lay each scenario of BANK on a grid's loads (the group curve shared by rated power), run an AC "
        "power flow at every step of the week (lightsim2grid, batched) and record per week the largest transformer "
        "and line loading and the extreme bus voltages. Estimate the weekly probability of a transformer overload "
        "and of a voltage-band violation under p from the bank's importance weights (or, where they fail, from a "
        "proposal built for the event), beside rejection sampling at equal wall time. Needs the grid extra: "
        "pip install 'energy-btgm[grid]'.",
    )
    _add_common(p)
    p.add_argument(
        "bank", nargs="?", help="bank file or folder (default: the store's last tuned bank of --criterion for --group-size)"
    )
    p.add_argument("--criterion", default="weekly-peak", help="without BANK: whose tuned bank (default: weekly-peak)")
    p.add_argument("--group-size", type=int, default=100, metavar="N", help="without BANK: which group size (default: 100)")
    _option(p, StudyConfig, "grid", help="SimBench code or pandapower JSON file")
    _option(p, StudyConfig, "scenarios", metavar="N", help="bank weeks to simulate")
    _option(
        p,
        StudyConfig,
        "seconds",
        metavar="S",
        help="wall time for each risk estimate (BTGM's, rejection's), power flows included",
    )
    _option(p, StudyConfig, "trafo_limit", metavar="PCT", help="transformer loading that counts as an overload [%% of rating]")
    _option(p, StudyConfig, "v_min", metavar="PU", help="lowest acceptable bus voltage [pu]")
    _option(p, StudyConfig, "v_max", metavar="PU", help="highest acceptable bus voltage [pu]")
    _option(p, StudyConfig, "growth", metavar="X", help="demand growth factor on every curve (electrification scenarios)")
    _option(p, StudyConfig, "power_factor", metavar="PF", help="power factor of every load (reactive power from it)")
    _option(p, StudyConfig, "max_homes_per_load", metavar="K", help="most homes one grid load may stand for")
    _option(p, StudyConfig, "resolution_min", metavar="MIN", help="resolution the study expects of the bank (0: the bank's)")
    _option(
        p,
        StudyConfig,
        "estimator",
        choices=["auto", "bank", "proposal"],
        help="BTGM's estimate: the bank's weights where they pass and else a proposal built for the event (auto), or one of them",
    )
    _option(p, StudyConfig, "seed", metavar="S", help="random seed")
    p.add_argument("--out", metavar="DIR", help="output folder (default: <reports>/grid/<grid>-<criterion>-n<group>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_grid_study)

    p = sub.add_parser(
        "report",
        help="write the self-contained HTML report of everything in the store",
        description="Gather data quality, model cards, tuned criteria (curves, Pareto fronts, β paths), the "
        "criterion assessment and the rejection-sampling comparison into <reports>/<run>/index.html "
        "with a summary.json of every number shown.",
    )
    _add_common(p)
    p.add_argument("--run", default="latest", help="report folder name under --reports (default: latest)")
    p.set_defaults(func=_cmd_report)
    return parser


# the commands that write into the store or the reports: one at a time per store (``store_lock``)
WRITERS = {"synth", "ingest", "curves", "train", "tune", "assess", "compare", "grid-study", "report"}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "tune" and args.top_fraction is None and args.target_kl is None and args.target_mean is None:
        args.top_fraction = 0.01
    step = f"energy-btgm {args.command}"
    try:
        if args.command in WRITERS and not getattr(args, "describe", None):
            with store_lock(store_root(args.store), run_id=uuid.uuid4().hex[:12], command=step):
                return args.func(args)
        return args.func(args)
    except KeyboardInterrupt:
        print(f"{step}: interrupted; outputs are written atomically, so nothing half-written is left", file=sys.stderr)
        return 130
    except (UsageError, ParameterError) as e:
        print(f"{step}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:
        if args.debug:
            raise
        if isinstance(e, EXPECTED):
            print(f"{step}: error: {_one_line(e)}", file=sys.stderr)
        else:
            print(
                f"{step}: unexpected error ({type(e).__name__}: {_one_line(e)}); rerun with --debug for the "
                "traceback and report it",
                file=sys.stderr,
            )
        return 1


def _one_line(e: BaseException) -> str:
    text = str(e).strip().strip("'\"") if isinstance(e, KeyError) else str(e).strip()
    return " ".join(text.split()) or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
