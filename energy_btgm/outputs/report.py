"""The analyst's report: one self-contained HTML page and the ``summary.json`` of every number it shows.

It gathers what the pipeline left in the store and the reports folder: data quality from ingestion
and curves, each model card's fit numbers, per tuned criterion and group size the curves of p vs
the tuned q (mean ± std and five samples), the Pareto front with theory and the β path, the
criterion assessment, the quantile comparison with rejection sampling (intervals, cost) and the
diversity factor / ADMD table. The page is ``templates/report.html.j2``; this module only gathers
the numbers and formats them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

import criteria
from energy_btgm import bank, faults
from energy_btgm.core.figures import data_uri, mean_band, png_bytes, week_panels
from energy_btgm.core.html import render
from energy_btgm.model.card import TARGETS_TEXT
from energy_btgm.model.vae import load_model
from energy_btgm.store import atomic_dir, code_version, to_json
from energy_btgm.tuning.engine import KL_TOP_1PC

TEMPLATE = Path(__file__).parent / "templates" / "report.html.j2"


def _curves_figure(p_curves: np.ndarray, q_curves: np.ndarray, title: str) -> str:
    """p's curves beside the tuned q's (mean ± std and five samples each), as a data URI."""
    names = ("p (untuned model)", "tuned q")
    fig, ax, hours = week_panels([f"{name}: mean ± std and 5 samples" for name in names], p_curves.shape[1])
    for a, x in zip(ax, (p_curves, q_curves)):
        mean_band(a, hours, x)
    fig.suptitle(title, y=1.04)
    return data_uri(png_bytes(fig, dpi=80))


def _extremes_figure(real: np.ndarray, bank_curves: np.ndarray, crit, title: str, k: int = 5) -> tuple[str, dict]:
    """The real held-out weeks with the most extreme value of ``crit`` (its direction) beside the tuned bank's
    curves at the same rank of the bank, as a data URI, and the criterion's values of both.

    The question a planner asks of a tuned bank: do its weeks look like the real extreme weeks (shape, timing,
    level), or like something no home does?"""
    f_real = crit(torch.tensor(real, dtype=torch.float32)).numpy()  # (N,) (a copy: the curves are read-only)
    f_bank = crit(torch.as_tensor(bank_curves, dtype=torch.float32)).numpy()  # (M,)
    top = np.argsort(-crit.direction * f_real, kind="stable")[:k]  # the k most extreme real weeks
    ranks = (np.linspace(0.1, 0.9, k) * (len(f_bank) - 1)).astype(int)
    mid = np.argsort(f_bank, kind="stable")[ranks]  # k bank weeks, from the bank's p10 to its p90 of the criterion
    titles = [f"the {k} most extreme real test weeks", f"{k} tuned-bank weeks (its p10 to p90)"]
    fig, ax, hours = week_panels(titles, real.shape[1])
    for a, x, f in ((ax[0], real[top], f_real[top]), (ax[1], bank_curves[mid], f_bank[mid])):
        for c, v in zip(x, f):
            a.plot(hours, c, lw=0.7, alpha=0.85, label=f"{v:.3g} {crit.unit}")
        a.legend(fontsize=7, title=crit.name, title_fontsize=7, loc="upper left")
    fig.suptitle(title, y=1.04)
    values = {
        "real_test_weeks": int(len(real)),
        "real_top": [float(v) for v in f_real[top]],
        "bank_p10_p50_p90": [float(v) for v in np.quantile(f_bank, [0.1, 0.5, 0.9])],
    }
    return data_uri(png_bytes(fig, dpi=80)), values


def _real_test_curves(gen) -> np.ndarray | None:
    """The held-out test weeks (kW) of the curves the model was trained on, or None when they are gone."""
    from energy_btgm.data.curves import read_groups

    curves_file = Path(gen.meta.get("curves_file", ""))
    try:
        df = read_groups(curves_file.parents[1], int(gen.meta["group_size"]), split="test", curves_dir=curves_file.parent)
    except (FileNotFoundError, ValueError, KeyError, OSError):
        return None
    return df.attrs["curves_kw"] if len(df) else None


def _cell(v) -> str:
    """A number as people read it in a table: thousands separators, 4 significant digits, never an exponent,
    – for missing.

    >>> [_cell(v) for v in (12345, 0.000052, 1234.5678, 2.5e7, float("nan"))]
    ['12,345', '0.000052', '1,235', '25,000,000', '–']
    """
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return f"{v:,}"
    if isinstance(v, float):
        if not np.isfinite(v):
            return "–"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return np.format_float_positional(v, precision=4, unique=True, fractional=False, trim="-")
    return str(v)


def _percent(x: float) -> str:
    """A relative error as people read it: '−0.2 %', '+12.5 %' (– for missing).

    >>> [_percent(v) for v in (-0.002088, 0.1256, float("nan"))]
    ['−0.2\\xa0%', '+12.6\\xa0%', '–']
    """
    return "–" if not np.isfinite(x) else f"{x * 100:+.1f}\u00a0%".replace("-", "−")


def _one_in(p: float) -> str:
    """An exceedance probability as a planner says it: '1 in 10,000 weeks' (3 significant digits)."""
    if not p > 0:
        return "never in the samples"
    n = 1 / p
    return f"1 in {float(f'{n:.3g}'):,.0f} weeks"


def _headline(comparisons_raw: list[dict]) -> list[dict]:
    """What a planner reads first: per comparison, the far-tail quantiles with their intervals, what rejection
    sampling gives at the same cost, the reference, and whether the weights can be trusted."""
    out = []
    for c in comparisons_raw:
        unit, lines = c.get("unit", ""), []
        for u, e in sorted(c["levels"].items(), key=lambda kv: float(kv[0])):
            b, r, ref = e["btgm"], e["rejection"], e["reference"]
            width_b = b["quantile_ci"][1] - b["quantile_ci"][0]
            width_r = r["quantile_ci"][1] - r["quantile_ci"][0]
            ratio = e.get("variance_ratio_rejection_over_btgm")
            trusted = b.get("weights_reliable")
            lines.append(
                {
                    "level": f"{float(u) * 100:.4f}".rstrip("0").rstrip(".") + "\u00a0%",
                    "every": _one_in(1 - float(u)),
                    "btgm": f"{_cell(b['quantile'])} {unit} [{_cell(b['quantile_ci'][0])}, {_cell(b['quantile_ci'][1])}]",
                    "rejection": f"{_cell(r['quantile'])} {unit} [{_cell(r['quantile_ci'][0])}, {_cell(r['quantile_ci'][1])}]",
                    "reference": f"{_cell(ref['quantile'])} {unit}",
                    "narrower": f"{width_r / width_b:.1f}×" if width_b > 0 else "–",
                    "variance_ratio": ratio_text(ratio),
                    "seconds": " s vs ".join(_cell(x["seconds_per_10k_effective_tail"]) for x in (b, r)) + " s",
                    "weights": "–"
                    if trusted is None
                    else ("trusted" if trusted else "not trusted: " + "; ".join(b["weight_problems"])),
                }
            )
        seconds = f"{c['seconds_budget']:g}"
        out.append({"criterion": c["criterion"], "group_size": c["group_size"], "seconds": seconds, "lines": lines})
    return out


def _table(headers: list[str], rows: list[list]) -> dict:
    return {"headers": headers, "rows": [[_cell(v) for v in r] for r in rows]}


def _read_json(path: Path):
    return json.loads(Path(path).read_text()) if Path(path).exists() else None


def _data_quality(store: Path, summary: dict) -> dict | None:
    readings = _read_json(store / "readings" / "_manifest.json")
    curves = _read_json(store / "curves" / "_manifest.json")
    if not readings:
        return None
    c = readings["counts"]
    v = readings.get("validation")
    summary["data_quality"] = {
        "counts": c,
        "meters": readings["meters"],
        "date_range": readings["date_range"],
        "validation": v and {k: v[k] for k in ("success", "evaluated", "result_file")},
        "household_weeks_kept": curves and curves["household_weeks_kept"],
        "household_weeks_excluded": curves and curves["household_weeks_excluded"],
    }
    rows = [["rows in", c["rows_in"]], ["rows kept", c["rows_kept"]], ["rows quarantined", c["rows_quarantined"]]]
    rows += [[f"  quarantined: {k}", n] for k, n in c["quarantined_by_reason"].items()]
    rows += [
        ["gap-filled readings", c["rows_repaired_filled"]],
        ["DST ambiguous times resolved", c["dst_ambiguous_resolved"]],
        ["meters", readings["meters"]],
        [
            "household-weeks kept / excluded",
            f"{curves['household_weeks_kept']:,} / {curves['household_weeks_excluded']:,}" if curves else "–",
        ],
    ]
    return {"validation_passed": bool(v and v["success"]), "table": _table(["", "count"], rows)}


def _models(store: Path, summary: dict) -> dict | None:
    rows = []
    for card_path in sorted((store / "models").glob("vae-n*/card.json")):
        card = json.loads(card_path.read_text())
        base = card.get("train_vs_test", {})  # cards written before the baseline existed lack it
        summary.setdefault("models", {})[str(card["group_size"])] = {
            **{k: card[k] for k in ("test_elbo", "ks", "q99_rel_err", "targets") if k in card},
            "train_vs_test": base,
        }
        checked = card.get("targets", {}).get("by_statistic", {})  # older cards checked fewer statistics
        for name in card["ks"]:
            rows.append(
                [
                    f"{card['group_size']} homes",
                    name,
                    ("met" if checked[name]["met"] else "missed") if name in checked else "–",
                    round(card["ks"][name], 3),
                    _percent(card["q99_rel_err"][name]),
                    round(base.get("ks", {}).get(name, float("nan")), 3),
                    _percent(base.get("q99_rel_err", {}).get(name, float("nan"))),
                ]
            )
    if not rows:
        return None
    return _table(
        [
            "group",
            "statistic",
            "target",
            "KS",
            "q0.99 rel. error",
            "KS, training data vs test",
            "q0.99 rel. error, training data vs test",
        ],
        rows,
    )


def _tuned(store: Path, summary: dict) -> tuple[dict | None, list[dict], dict | None]:
    """The tuned runs' summary table, one section per run, and the DF/ADMD table."""
    rows, sections, dfadmd_rows = [], [], []
    for s_path in sorted((store / "tuned").glob("*/summary.json")):
        s = json.loads(s_path.read_text())
        key = f"{s['criterion']}-n{s['group_size']}"
        summary.setdefault("tuned", {})[key] = {
            k: s[k]
            for k in (
                "criterion",
                "group_size",
                "target_kl",
                "beta",
                "kl",
                "mean_f",
                "mean_f_under_p",
                "pareto_efficiency",
                "converged",
                "seconds",
                "unit",
            )
        }
        summary["tuned"][key]["beta_path"] = [{k: p[k] for k in ("iteration", "beta", "kl", "mean_f")} for p in s["path"]]
        rows.append(
            [
                s["criterion"],
                s["group_size"],
                s["target_kl"],
                s["beta"],
                s["kl"],
                f"{s['mean_f']:.2f} vs {s['mean_f_under_p']:.2f} {s['unit']}",
                s["pareto_efficiency"],
                *_weights_cells(s.get("bank_weights")),
            ]
        )
        summary["tuned"][key]["bank_weights"] = s.get("bank_weights")
        section = {"criterion": s["criterion"], "group_size": s["group_size"], "key": key}
        section.update(curves=None, extremes=None, error=None)
        try:
            b = bank.read(s["bank"])
            gen = load_model(s["model"])
            with torch.no_grad():
                u = torch.randn(2000, gen.latent_dim, generator=torch.Generator().manual_seed(0))  # (2000, Z)
                p_curves = gen.decode_kw(u)[0].numpy()  # (2000, T)
            q_curves = b.attrs["load_kw"][:2000]
            section["curves"] = _curves_figure(p_curves, q_curves, key)
            real = _real_test_curves(gen)
            if real is not None:
                title = f"{key}: the tuned bank beside the real extreme weeks"
                section["extremes"], summary["tuned"][key]["extremes"] = _extremes_figure(
                    real, q_curves, criteria.get(s["criterion"]), title
                )
            peak_p = p_curves.max(1)
            w = b["weight"].to_numpy()
            dfadmd_rows.append(
                [
                    key,
                    float(np.mean(b["df"])),
                    float(np.mean(b["admd_kw"])),
                    float(np.average(b["df"], weights=w)),
                    float(np.average(b["admd_kw"], weights=w)),
                    float(peak_p.mean() / s["group_size"]),
                ]
            )
            summary["tuned"][key]["bank_df_mean"], summary["tuned"][key]["bank_admd_kw_mean"] = dfadmd_rows[-1][1:3]
        except (FileNotFoundError, ValueError) as e:
            section["error"] = str(e)
        png = s_path.parent / "pareto.png"
        section["pareto"] = data_uri(png.read_bytes()) if png.exists() else None
        section["path"] = _table(
            ["iteration", "β", "KL [nats]", "E f̃"], [[p["iteration"], p["beta"], p["kl"], p["mean_f"]] for p in s["path"]]
        )
        sections.append(section)
    headers = ["criterion", "group", "target KL", "β", "KL", "E f tuned vs p", "Pareto efficiency"]
    headers += ["bank weights: ESS", "Pareto k̂", "estimates under p?"]
    table = _table(headers, rows) if rows else None
    dfadmd = (
        _table(
            [
                "tuned run",
                "DF (tuned q)",
                "ADMD kW (tuned q)",
                "DF (reweighted to p)",
                "ADMD kW (reweighted to p)",
                "ADMD kW under p",
            ],
            dfadmd_rows,
        )
        if dfadmd_rows
        else None
    )
    return table, sections, dfadmd


def _assessments(reports: Path, summary: dict) -> list[dict]:
    out = []
    for a_path in sorted((reports / "assess").glob("*/assess.json")):
        a = json.loads(a_path.read_text())
        summary.setdefault("assessment", {})[a_path.parent.name] = {"recommended": a["recommended"], "variants": a["variants"]}
        png = a_path.parent / "gradients.png"
        out.append(
            {
                "criterion": a["criterion"],
                "recommended": a["recommended"],
                "figure": data_uri(png.read_bytes()) if png.exists() else None,
            }
        )
    return out


def _weights_cells(d: dict | None) -> list:
    """ESS, Pareto k̂ and the verdict of a set of importance weights, as table cells."""
    if not d:
        return ["–", "–", "–"]
    k = d.get("pareto_k")
    return [round(d["ess"]), "–" if k is None else f"{k:.2f}", "yes" if d["reliable"] else "no: " + "; ".join(d["problems"])]


def _number(x) -> float:
    """A table cell's number: None (no data) shows as a dash, like NaN."""
    return float("nan") if x is None else x


PROPOSALS = {
    "modes": "the tail's modes found by multilevel cross-entropy, a Gaussian mixture in latent space",
    "flows": "a BTGM flow tuned toward the tail, with defensive components",
}


def ratio_text(r: float | None) -> str:
    """A variance ratio for people: three significant digits, thousands separated, never an exponent.

    >>> [ratio_text(r) for r in (None, 7.71, 84.06, 573.4, 12345.6)]
    ['–', '7.71×', '84.1×', '573×', '12,346×']
    """
    if r is None:
        return "–"
    return f"{r:,.0f}×" if r >= 100 else f"{r:.3g}×"


def _ratio(e: dict) -> str:
    return ratio_text(e.get("variance_ratio_rejection_over_btgm"))


def _comparisons(reports: Path, summary: dict) -> list[dict]:
    out = []
    for c_path in sorted((reports / "compare").glob("*/compare.json")):
        c = json.loads(c_path.read_text())
        summary.setdefault("compare", {})[c_path.parent.name] = c
        rows = []
        for u, e in c["levels"].items():
            for m in ("reference", "rejection", "btgm"):
                x = e[m]
                ci = x.get("quantile_ci")
                rows.append(
                    [
                        u,
                        m,
                        x["quantile"],
                        f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "–",
                        _one_in(x["exceedance"]),
                        x.get("decoder_evaluations", x.get("n")),
                        x.get("seconds") or float("nan"),
                        x.get("seconds_per_10k_effective_tail", float("nan")),
                        _ratio(e) if m == "btgm" else "–",
                        _number(x.get("tail_df_mean")),
                        _number(x.get("tail_admd_kw_mean")),
                        *(
                            _weights_cells(
                                {
                                    "ess": x.get("weights_ess", x["ess"]),
                                    "pareto_k": x.get("pareto_k"),
                                    "reliable": x["weights_reliable"],
                                    "problems": x["weight_problems"],
                                }
                            )
                            if m == "btgm" and "weights_reliable" in x
                            else ["–", "–", "–"]
                        ),
                    ]
                )
            if "real_test_quantile" in e:
                rows.append(
                    [
                        u,
                        f"real test weeks ({e['real_test_curves']:,} curves)",
                        e["real_test_quantile"],
                        "–",
                        float("nan"),
                        "–",
                        float("nan"),
                        float("nan"),
                        "–",
                        float("nan"),
                        float("nan"),
                        "–",
                        "–",
                        "–",
                    ]
                )
        out.append(
            {
                "criterion": c["criterion"],
                "group_size": c["group_size"],
                "seconds_budget": f"{c['seconds_budget']:g}",
                "reference_samples": f"{c['reference_samples']:,}",
                "proposal": PROPOSALS.get(c.get("proposal", "flows"), c.get("proposal")),
                "direction": c.get("direction", 1),
                "table": _table(
                    [
                        "level",
                        "method",
                        f"quantile [{c['unit']}]",
                        "95 % interval",
                        "exceedance of ref. quantile",
                        "decoder evaluations",
                        "seconds",
                        "s per 10k effective tail scenarios",
                        "variance ratio rejection / BTGM",
                        "DF in tail",
                        "ADMD kW in tail",
                        "weights: ESS",
                        "Pareto k̂",
                        "reliable?",
                    ],
                    rows,
                ),
            }
        )
    return out


def _sig(x: float) -> str:
    """A number to 3 significant digits, as ``_cell`` writes it (no exponent).

    >>> [_sig(v) for v in (0.000352461, 61.37, 12345.6)]
    ['0.000352', '61.4', '12,300']
    """
    return _cell(float(f"{x:.3g}"))


def _grid_studies(reports: Path, summary: dict) -> list[dict]:
    """The grid studies under ``reports/grid/``: overload and voltage risk, BTGM beside rejection, and their figures."""
    out = []
    for path in sorted((reports / "grid").glob("*/study.json")):
        g = json.loads(path.read_text())
        summary.setdefault("grid", {})[path.parent.name] = g
        c = g["config"]
        events = {
            "trafo_overload": f"transformer above {c['trafo_limit']:g} %",
            "voltage_out_of_band": f"a bus outside {c['v_min']:g}–{c['v_max']:g} pu",
        }
        rows = []
        for event, text in events.items():
            for name, part in ((f"BTGM ({g['btgm']['method']})", g["btgm"]), ("rejection sampling", g["rejection"])):
                e = part["estimates"][event]
                weighted = name.startswith("BTGM") and "ess" in e
                rows.append(
                    [
                        text,
                        name,
                        f"{_sig(e['p'])} [{_sig(e['ci'][0])}, {_sig(e['ci'][1])}]",
                        _one_in(e["p"]),
                        _cell(int(part["scenarios"])),
                        _cell(int(e["hits"])),
                        _sig(part["seconds"]),
                        *(_weights_cells(e) if weighted else ["–", "–", "–"]),
                    ]
                )
        figs = {
            k: data_uri((path.parent / f).read_bytes()) if (path.parent / f).exists() else None
            for k, f in (("loading", "loading.png"), ("worst", "worst_weeks.png"))
        }
        gs = g["grid_summary"]
        out.append(
            {
                "grid": g["grid"],
                "criterion": g["criterion"],
                "group_size": g["group_size"],
                "growth": f"{c['growth']:g}",
                "description": f"{gs['buses']} buses, {gs['loads']} loads, transformer "
                f"{', '.join(f'{r:g}' for r in gs['trafo_rating_kva'])} kVA; {g['allocation']}, power factor "
                f"{c['power_factor']:g}. An AC power flow at every half-hour of every week simulated "
                f"({_cell(int(g['power_flows_per_second']))} power flows per second).",
                "rows": rows,
                "why": "BTGM's estimate: " + g["btgm"]["why"] + ".",
                **figs,
            }
        )
    return out


def build(store: Path, reports: Path, run: str = "latest") -> Path:
    """Write ``<reports>/<run>/index.html`` and ``summary.json``; return the HTML path."""
    store, reports = Path(store), Path(reports)
    summary: dict = {"run": run, "code_version": code_version(), "store": str(store)}
    tuned_table, tuned_sections, dfadmd = _tuned(store, summary)
    faults.point("report tuned sections")
    comparisons = _comparisons(reports, summary)
    page = render(
        TEMPLATE,
        card_targets=TARGETS_TEXT,
        run=run,
        code_version=code_version(),
        kl_top_1pc=f"{KL_TOP_1PC:.2f}",
        data_quality=_data_quality(store, summary),
        models=_models(store, summary),
        tuned_table=tuned_table,
        tuned_sections=tuned_sections,
        dfadmd=dfadmd,
        assessments=_assessments(reports, summary),
        comparisons=comparisons,
        headline=_headline(list(summary.get("compare", {}).values())),
        grid_studies=_grid_studies(reports, summary),
    )
    faults.point("report rendered")
    text = to_json(summary, f"the report {reports / run}", indent=1, default=float)  # before anything is written
    with atomic_dir(reports / run, overwrite=True) as out:
        (out / "index.html").write_text(page)
        (out / "summary.json").write_text(text)
    return reports / run / "index.html"
