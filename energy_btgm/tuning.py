"""Tune a trained VAE toward a named criterion: flow, β path, theory curves, Pareto efficiency, bank.

``tune_criterion`` runs the BTGM engine (``energy_btgm.btgm``) on the frozen decoder of a model,
then measures the result against the theory (Eq. 29–31): theory points come from samples of p where
their effective sample size holds and, at high KL where it collapses, from the tuned flow used as
importance proposal (``E_qβ[h] = E_q̂[h·w·e^{βf}] / E_q̂[w·e^{βf}]``, ``w = p/q̂``). A theory point
whose ESS is below ``MIN_ESS`` is flagged and never used. Outputs, under the store:
``tuned/<criterion>-nN/`` (flow.pt, summary.json, figures) and a bank of tuned scenarios
``banks/criterion=<c>/group_size=N/run=<run>/part-0.parquet``.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from scipy.special import logsumexp

import criteria
from energy_btgm.btgm import LatentFlow, TuneConfig, theory_from_p, tune
from energy_btgm.model import Generator, load_model
from energy_btgm.sample import curves_table, validate_bank
from energy_btgm.store import atomic_dir, atomic_write_parquet, code_version, sha256_file

MIN_ESS = 200.0
N_THEORY_P = 200_000
N_THEORY_Q = 100_000


def theory_from_proposal(f_q: np.ndarray, log_w: np.ndarray, betas: np.ndarray) -> dict:
    """Eq. 29–31 with samples of a proposal q̂: f_i = f(z_i), log_w_i = log p(z_i) − log q̂(z_i)."""
    n = len(f_q)
    out = {"beta": [], "mean_f": [], "kl": [], "ess": []}
    for b in betas:
        lw = log_w + b * f_q
        log_z = logsumexp(lw) - math.log(n)
        w = np.exp(lw - logsumexp(lw))
        mean_f = float((w * f_q).sum())
        out["beta"].append(float(b)), out["mean_f"].append(mean_f)
        out["kl"].append(float(b * mean_f - log_z)), out["ess"].append(float(1.0 / (w ** 2).sum()))
    return {k: np.array(v) for k, v in out.items()}


def theory_curve(f_p: np.ndarray, f_q: np.ndarray, log_w: np.ndarray, betas: np.ndarray) -> dict:
    """Per β, the estimate (from p or from q̂) with the larger ESS; ``usable`` where ESS ≥ MIN_ESS."""
    a, b = theory_from_p(f_p, betas), theory_from_proposal(f_q, log_w, betas)
    use_q = b["ess"] > a["ess"]
    out = {k: np.where(use_q, b[k], a[k]) for k in ("beta", "mean_f", "kl", "ess")}
    out["source"] = np.where(use_q, "q", "p")
    out["usable"] = out["ess"] >= MIN_ESS
    return out


def pareto_efficiency(theory: dict, kl_hat: float, mean_hat: float, mean_p: float) -> tuple[float, float, float]:
    """(efficiency, β*, E_qβ* f) with β* the β whose theoretical KL equals ``kl_hat`` (usable points only)."""
    ok = theory["usable"]
    kl, mean, beta = theory["kl"][ok], theory["mean_f"][ok], theory["beta"][ok]
    if len(kl) < 2 or not kl.min() <= kl_hat <= kl.max():
        return float("nan"), float("nan"), float("nan")
    order = np.argsort(kl)
    beta_star = float(np.interp(kl_hat, kl[order], beta[order]))
    mean_star = float(np.interp(kl_hat, kl[order], mean[order]))
    return (mean_hat - mean_p) / (mean_star - mean_p), beta_star, mean_star


def _png(fig) -> bytes:
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def figures(theory: dict, path: list[dict], kl_hat: float, mean_hat: float, name: str) -> dict[str, bytes]:
    """Paper Fig. 3–5 style: E f vs β, KL vs β, E f vs KL; theory as a line, the tuned model as markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = theory["usable"]
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.4))
    for a, (x, y, xl, yl) in zip(ax, (("beta", "mean_f", "β", "E f̃"), ("beta", "kl", "β", "KL(q‖p) [nats]"),
                                       ("kl", "mean_f", "KL(q‖p) [nats]", "E f̃"))):
        a.plot(theory[x][ok], theory[y][ok], "-", label="theory (Eq. 29–31)")
        if (~ok).any():
            a.plot(theory[x][~ok], theory[y][~ok], ":", color="grey", label=f"theory, ESS < {MIN_ESS:.0f} (not used)")
        a.plot([p[x] for p in path], [p[y] for p in path], "o", mfc="none", label="β path (flow)")
        a.set(xlabel=xl, ylabel=yl)
    ax[2].plot([kl_hat], [mean_hat], "r*", ms=12, label="tuned model")
    ax[2].legend(fontsize=7)
    fig.suptitle(f"{name}: tuned model against the optimal Pareto front")
    return {"pareto.png": _png(fig)}


def resolve_target(top_fraction: float | None, target_kl: float | None, target_mean: float | None) -> dict:
    given = [x is not None for x in (top_fraction, target_kl, target_mean)]
    if sum(given) != 1:
        raise ValueError("give exactly one of --top-fraction, --target-kl, --target-mean")
    if top_fraction is not None:
        if not 0 < top_fraction < 1:
            raise ValueError(f"--top-fraction must be in (0, 1), got {top_fraction}")
        return {"target_kl": -math.log(top_fraction), "top_fraction": top_fraction, "target_mean": None}
    if target_kl is not None and target_kl <= 0:
        raise ValueError(f"--target-kl must be positive, got {target_kl}")
    return {"target_kl": target_kl, "top_fraction": None, "target_mean": target_mean}


def tune_criterion(store: Path, criterion: str, model_dir: Path, *, top_fraction: float | None = None,
                   target_kl: float | None = None, target_mean: float | None = None, seed: int = 0,
                   cfg: TuneConfig | None = None, n_bank: int = 10_000, progress=None) -> dict:
    """Tune, measure against theory, write the flow, figures, summary and bank; return the summary."""
    t0 = time.perf_counter()
    target = resolve_target(top_fraction, target_kl, target_mean)
    gen: Generator = load_model(model_dir)
    crit = criteria.get(criterion)
    T = gen.meta["points_per_week"]
    criteria.check(crit, T=T)
    cfg = dataclasses.replace(cfg or TuneConfig(), seed=seed)

    def f_latent(z):  # the training criterion, signed so that BTGM maximises it
        return crit.train(gen.decode_kw(z)[0])

    res = tune(f_latent, gen.latent_dim, target["target_kl"], cfg, progress=progress,
               target_mean=None if target["target_mean"] is None else crit.direction * target["target_mean"])
    norm = res.normaliser
    # theory and efficiency on the normalised training criterion
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed + 99)
        f_p = torch.cat([norm(f_latent(torch.randn(8192, gen.latent_dim, generator=g))) for _ in range(N_THEORY_P // 8192)]).double().numpy()
        zs, lq, lp = [], [], []
        for _ in range(N_THEORY_Q // 8192):
            z, log_q, log_p = res.flow.sample(8192, generator=g)
            zs.append(z), lq.append(log_q), lp.append(log_p)
        z_q, log_q, log_p = torch.cat(zs), torch.cat(lq).double().numpy(), torch.cat(lp).double().numpy()
        f_q = norm(f_latent(z_q)).double().numpy()
    kl_hat = float((log_q - log_p).mean())
    mean_hat = float(f_q.mean())
    betas = np.linspace(0.0, 1.6 * max(res.beta, 0.5), 81)
    theory = theory_curve(f_p, f_q, log_p - log_q, betas)
    eff, beta_star, mean_star = pareto_efficiency(theory, kl_hat, mean_hat, float(f_p.mean()))

    # the tuned scenarios, scored with the reporting (hard) criterion
    with torch.no_grad():
        gb = torch.Generator().manual_seed(seed + 7)
        z, lq_b, lp_b = res.flow.sample(n_bank, generator=gb)
        curves, peaks = (t.numpy() for t in gen.decode_kw(z))
        zp = torch.randn(n_bank, gen.latent_dim, generator=gb)
        curves_p = gen.decode_kw(zp)[0]
        f_hard_q = crit(torch.as_tensor(curves)).numpy()
        f_hard_p = crit(curves_p).numpy()
    name = f"{criterion}-n{gen.meta['group_size']}"
    run = f"{criterion}-n{gen.meta['group_size']}-s{seed}-kl{res.kl:.2f}"
    model_sha = sha256_file(Path(model_dir) / "weights.pt")
    summary = {
        "criterion": criterion, "unit": crit.unit, "direction": crit.direction, "group_size": gen.meta["group_size"],
        "target_kl": target["target_kl"], "top_fraction": target["top_fraction"], "target_mean": target["target_mean"],
        "beta": res.beta, "beta_criterion_units": res.beta / norm.std, "kl": kl_hat, "kl_search": res.kl,
        "converged": res.converged,
        "mean_f": float(f_hard_q.mean()), "mean_f_under_p": float(f_hard_p.mean()),
        "mean_f_tilde": mean_hat, "mean_f_tilde_under_p": float(f_p.mean()),
        "pareto_efficiency": eff, "beta_star": beta_star, "mean_f_tilde_star": mean_star,
        "normaliser": dataclasses.asdict(norm), "path": res.path,
        "theory": {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in theory.items()},
        "theory_points_flagged": int((~theory["usable"]).sum()), "min_ess": MIN_ESS,
        "ess_of_bank_weights": float(np.exp(2 * logsumexp(lp_b.numpy() - lq_b.numpy()) - logsumexp(2 * (lp_b.numpy() - lq_b.numpy())))),
        "model": str(model_dir), "model_sha256": model_sha, "seed": seed, "tune_config": dataclasses.asdict(cfg),
        "code_version": code_version(), "run": run, "seconds": round(time.perf_counter() - t0, 1),
    }
    store = Path(store)
    with atomic_dir(store / "tuned" / name, overwrite=True) as out:
        torch.save({"flow": res.flow.state_dict(), "dim": gen.latent_dim, "transforms": cfg.transforms,
                    "hidden": cfg.hidden, "normaliser": dataclasses.asdict(norm), "beta": res.beta,
                    "model": str(model_dir), "model_sha256": model_sha}, out / "flow.pt")
        for fname, data in figures(theory, res.path, kl_hat, mean_hat, name).items():
            (out / fname).write_bytes(data)
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
    table = curves_table(curves, peaks, gen.meta["group_size"], z.numpy())
    lq_np, lp_np = lq_b.numpy().astype(np.float64), lp_b.numpy().astype(np.float64)
    table = table.append_column("log_q", pa.array(lq_np)).append_column("weight", pa.array(np.exp(lp_np - lq_np)))
    table = table.append_column("source", pa.array(["btgm"] * n_bank)).append_column("beta", pa.array(np.full(n_bank, res.beta)))
    table = table.append_column("run", pa.array([run] * n_bank))
    meta = {"units": json.dumps({"load_kw": "kW", "peak_kw": "kW", "energy_kwh": "kWh", crit.name: crit.unit}),
            "time_resolution_min": str(int(round(10080 / T))), "week_convention": "Monday 00:00 local, interval start",
            "model": str(model_dir), "model_sha256": model_sha, "criterion": criterion,
            "target": json.dumps(target), "kl": f"{kl_hat:.6f}", "code_version": code_version(), "seed": str(seed),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    table = table.replace_schema_metadata({k: v.encode() for k, v in meta.items()})
    validate_bank(table)
    bank = store / "banks" / f"criterion={criterion}" / f"group_size={gen.meta['group_size']}" / f"run={run}" / "part-0.parquet"
    atomic_write_parquet(bank, table)
    summary["bank"] = str(bank)
    summary["flow_dir"] = str(store / "tuned" / name)
    (store / "tuned" / name / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def load_flow(path: Path) -> tuple[LatentFlow, dict]:
    """A saved tuned flow (``tuned/<name>/flow.pt``), or a clear error saying what to run."""
    path = Path(path)
    f = path / "flow.pt" if path.is_dir() else path
    if not f.exists():
        raise FileNotFoundError(f"no tuned flow at {f}; run `energy-btgm tune CRITERION --group-size N`")
    ck = torch.load(f, weights_only=False)
    flow = LatentFlow(ck["dim"], ck["transforms"], ck["hidden"])
    flow.load_state_dict(ck["flow"])
    return flow.eval(), ck


def png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()
