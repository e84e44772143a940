"""The analyst's report: one self-contained HTML page and the ``summary.json`` of every number it shows.

It gathers what the pipeline left in the store and the reports folder: data quality from ingestion
and curves, each model card's fit numbers, per tuned criterion and group size the curves of p vs
the tuned q (mean ± std and five samples), the Pareto front with theory and the β path, the
criterion assessment, the quantile comparison with rejection sampling (intervals, cost) and the
diversity factor / ADMD table.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np
import torch

from energy_btgm import bank
from energy_btgm.model import load_model
from energy_btgm.store import atomic_dir, code_version


def _b64(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _curves_figure(p_curves: np.ndarray, q_curves: np.ndarray, title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    T = p_curves.shape[1]
    hours = np.arange(T) * 168.0 / T
    fig, ax = plt.subplots(1, 2, figsize=(12, 3.2), sharey=True)
    for a, x, name in ((ax[0], p_curves, "p (untuned model)"), (ax[1], q_curves, "tuned q")):
        m, s = x.mean(0), x.std(0)
        a.fill_between(hours, m - s, m + s, alpha=0.25, label="mean ± std")
        a.plot(hours, m, lw=1.2)
        for c in x[:5]:
            a.plot(hours, c, lw=0.5, alpha=0.7)
        a.set(title=f"{name}: mean ± std and 5 samples", xlabel="hour of week (Monday 00:00)", xticks=range(0, 169, 24))
    ax[0].set_ylabel("kW")
    fig.suptitle(title, y=1.04)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return _b64(buf.getvalue())


def _table(headers: list[str], rows: list[list]) -> str:
    def cell(v):
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            return f"{v:,}"
        if isinstance(v, float):
            return f"{v:.4g}" if np.isfinite(v) else "–"
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _read_json(path: Path):
    return json.loads(Path(path).read_text()) if Path(path).exists() else None


def build(store: Path, reports: Path, run: str = "latest") -> Path:
    """Write ``<reports>/<run>/index.html`` and ``summary.json``; return the HTML path."""
    store, reports = Path(store), Path(reports)
    summary: dict = {"run": run, "code_version": code_version(), "store": str(store)}
    parts: list[str] = []

    readings = _read_json(store / "readings" / "_manifest.json")
    curves = _read_json(store / "curves" / "_manifest.json")
    if readings:
        c = readings["counts"]
        summary["data_quality"] = {"counts": c, "meters": readings["meters"], "date_range": readings["date_range"],
                                   "validation": readings.get("validation") and {k: readings["validation"][k] for k in ("success", "evaluated", "result_file")},
                                   "household_weeks_kept": curves and curves["household_weeks_kept"],
                                   "household_weeks_excluded": curves and curves["household_weeks_excluded"]}
        rows = [["rows in", c["rows_in"]], ["rows kept", c["rows_kept"]], ["rows quarantined", c["rows_quarantined"]]]
        rows += [[f"  quarantined: {k}", v] for k, v in c["quarantined_by_reason"].items()]
        rows += [["gap-filled readings", c["rows_repaired_filled"]], ["DST ambiguous times resolved", c["dst_ambiguous_resolved"]],
                 ["meters", readings["meters"]], ["household-weeks kept / excluded",
                                                   f"{curves['household_weeks_kept']:,} / {curves['household_weeks_excluded']:,}" if curves else "–"]]
        v = readings.get("validation")
        parts.append("<h2>Data quality</h2><p>What ingestion did to the meter data (every input row is kept or "
                     f"quarantined with a reason). Validation suite readings-v1: <b>{'passed' if v and v['success'] else 'not run or failed'}</b>.</p>"
                     + _table(["", "count"], rows))

    model_rows = []
    for card_path in sorted((store / "models").glob("vae-n*/card.json")):
        card = json.loads(card_path.read_text())
        base = card.get("train_vs_test", {})  # cards written before the baseline existed lack it
        summary.setdefault("models", {})[str(card["group_size"])] = {
            **{k: card[k] for k in ("test_elbo", "ks", "q99_rel_err", "targets") if k in card}, "train_vs_test": base}
        for name in card["ks"]:
            model_rows.append([f"{card['group_size']} homes", name, card["ks"][name], card["q99_rel_err"][name],
                               base.get("ks", {}).get(name, float("nan")), base.get("q99_rel_err", {}).get(name, float("nan"))])
    if model_rows:
        parts.append("<h2>How well the generative model fits</h2><p>Held-out test weeks against curves generated by the "
                     "untuned model (KS statistic: 0 is a perfect match; relative error of the 0.99 quantile). "
                     "Tail estimates below are estimates <i>of this model</i>: where it misfits, they inherit the misfit.</p>"
                     + "<p>The last two columns hold the training weeks' real curves against the same test weeks: the test split "
                     "is a few held-out weeks, and a model of the training data is not expected to come closer than that.</p>"
                     + _table(["group", "statistic", "KS", "q0.99 rel. error", "KS, training data vs test",
                               "q0.99 rel. error, training data vs test"], model_rows))

    tuned_rows, dfadmd_rows = [], []
    for s_path in sorted((store / "tuned").glob("*/summary.json")):
        s = json.loads(s_path.read_text())
        key = f"{s['criterion']}-n{s['group_size']}"
        summary.setdefault("tuned", {})[key] = {k: s[k] for k in ("criterion", "group_size", "target_kl", "beta", "kl", "mean_f",
                                                                   "mean_f_under_p", "pareto_efficiency", "converged", "seconds", "unit")}
        summary["tuned"][key]["beta_path"] = [{k: p[k] for k in ("iteration", "beta", "kl", "mean_f")} for p in s["path"]]
        tuned_rows.append([s["criterion"], s["group_size"], s["target_kl"], s["beta"], s["kl"],
                           f"{s['mean_f']:.2f} vs {s['mean_f_under_p']:.2f} {s['unit']}", s["pareto_efficiency"]])
        section = [f"<h3>{html.escape(s['criterion'])}, groups of {s['group_size']}</h3>"]
        try:
            b = bank.read(s["bank"])
            gen = load_model(s["model"])
            with torch.no_grad():
                p_curves = gen.decode_kw(torch.randn(2000, gen.latent_dim, generator=torch.Generator().manual_seed(0)))[0].numpy()
            q_curves = b.attrs["load_kw"][:2000]
            section.append(f'<img alt="curves of p and of the model tuned to {html.escape(s["criterion"])}" '
                           f'src="{_curves_figure(p_curves, q_curves, key)}">')
            peak_p = p_curves.max(1)
            w = b["weight"].to_numpy()
            dfadmd_rows.append([key, float(np.mean(b["df"])), float(np.mean(b["admd_kw"])),
                                float(np.average(b["df"], weights=w)), float(np.average(b["admd_kw"], weights=w)),
                                float(peak_p.mean() / s["group_size"])])
            summary["tuned"][key]["bank_df_mean"], summary["tuned"][key]["bank_admd_kw_mean"] = dfadmd_rows[-1][1], dfadmd_rows[-1][2]
        except (FileNotFoundError, ValueError) as e:
            section.append(f"<p>bank not readable: {html.escape(str(e))}</p>")
        png = s_path.parent / "pareto.png"
        if png.exists():
            section.append(f'<img alt="Pareto front with theory and beta path for {html.escape(key)}" src="{_b64(png.read_bytes())}">')
        section.append(_table(["iteration", "β", "KL [nats]", "E f̃"], [[p["iteration"], p["beta"], p["kl"], p["mean_f"]] for p in s["path"]]))
        parts.append("".join(section))
    if tuned_rows:
        parts.insert(len(parts) - len(tuned_rows), "<h2>Tuned scenarios</h2><p>Each criterion is tuned to the top 1 % of the "
                     "untuned model (KL = −log 0.01 = 4.61 nats). β is on the normalised criterion; Pareto efficiency 1 means "
                     "the tuned model reaches the best E f any model can reach at its KL.</p>"
                     + _table(["criterion", "group", "target KL", "β", "KL", "E f tuned vs p", "Pareto efficiency"], tuned_rows))
    if dfadmd_rows:
        parts.append("<h2>Diversity factor and ADMD</h2><p>Mean over tuned scenarios as drawn, reweighted to p (importance "
                     "weights), and the ADMD of the untuned model for comparison.</p>"
                     + _table(["tuned run", "DF (tuned q)", "ADMD kW (tuned q)", "DF (reweighted to p)", "ADMD kW (reweighted to p)",
                               "ADMD kW under p"], dfadmd_rows))

    for a_path in sorted((reports / "assess").glob("*/assess.json")):
        a = json.loads(a_path.read_text())
        summary.setdefault("assessment", {})[a_path.parent.name] = {"recommended": a["recommended"], "variants": a["variants"]}
        png = a_path.parent / "gradients.png"
        parts.append(f"<h2>Criterion assessment: {html.escape(a['criterion'])}</h2><p>Recommended variant: "
                     f"<b>{html.escape(a['recommended'])}</b> (fewest flat regions, most compact gradient norms).</p>"
                     + (f'<img alt="gradient norm distributions" src="{_b64(png.read_bytes())}">' if png.exists() else ""))

    for c_path in sorted((reports / "compare").glob("*/compare.json")):
        c = json.loads(c_path.read_text())
        summary.setdefault("compare", {})[c_path.parent.name] = c
        rows = []
        for u, e in c["levels"].items():
            for m in ("reference", "rejection", "btgm"):
                x = e[m]
                ci = x.get("quantile_ci")
                rows.append([u, m, x["quantile"], f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "–", x["exceedance"],
                             x.get("decoder_evaluations", x.get("n")), x.get("seconds") or float("nan"),
                             x.get("seconds_per_10k_effective_tail", float("nan")), x.get("tail_df_mean", float("nan")),
                             x.get("tail_admd_kw_mean", float("nan"))])
            if "real_test_quantile" in e:
                rows.append([u, f"real test weeks ({e['real_test_curves']:,} curves)", e["real_test_quantile"], "–",
                             float("nan"), "–", float("nan"), float("nan"), float("nan"), float("nan")])
        parts.append(f"<h2>Extreme quantiles: BTGM vs rejection sampling ({html.escape(c['criterion'])}, groups of {c['group_size']})</h2>"
                     f"<p>Each method had {c['seconds_budget']:g} s per level (BTGM's flow training included). Reference: "
                     f"{c['reference_samples']:,} samples of the untuned model.</p>"
                     + _table(["level", "method", f"quantile [{c['unit']}]", "95 % interval", "exceedance of ref. quantile",
                               "decoder evaluations", "seconds", "s per 10k effective tail scenarios", "DF in tail", "ADMD kW in tail"], rows))

    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>energy-btgm report: {html.escape(run)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;color:#222;line-height:1.4}}
table{{border-collapse:collapse;margin:0.5em 0 1em}}td,th{{border:1px solid #ccc;padding:3px 7px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}img{{max-width:100%;display:block;margin:0.5em 0}}</style></head><body>
<h1>Extreme-but-plausible load scenarios</h1>
<p>Weekly load curves of groups of homes, from a generative model (VAE) and from the same model tuned by Boltzmann
Tuning (BTGM) toward rare, extreme weeks. Every tuned scenario carries an importance weight back to the untuned model,
which turns the tuned samples into unbiased estimates of rare-event probabilities. Code version {html.escape(code_version())}.</p>
{''.join(parts) if parts else '<p>Nothing to report yet: run the pipeline first (make demo).</p>'}
</body></html>"""
    with atomic_dir(reports / run, overwrite=True) as out:
        (out / "index.html").write_text(page)
        (out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    return reports / run / "index.html"
