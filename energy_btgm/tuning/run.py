"""Tune a stored model toward a named criterion: flow, β path, theory curves, Pareto efficiency, bank.

``tune_criterion`` runs the BTGM engine (``tuning.engine``) on the frozen decoder of a model, then
measures the result against the theory (``tuning.theory``). Outputs, under the store:
``tuned/<criterion>-nN/`` (flow.pt, summary.json, figures) and a bank of tuned scenarios
``banks/criterion=<c>/group_size=N/run=<run>/part-0.parquet``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

import criteria
from energy_btgm import bank
from energy_btgm.core import BATCH, checkpoint
from energy_btgm.core.flow import LatentFlow
from energy_btgm.core.weights import diagnose
from energy_btgm.errors import ParameterError
from energy_btgm.model.vae import Generator, load_model
from energy_btgm.store import atomic_dir, code_version, sha256_file, to_json
from energy_btgm.tuning.engine import TuneConfig, tune
from energy_btgm.tuning.theory import MIN_ESS, pareto_efficiency, pareto_figure, theory_curve

N_THEORY_P = 200_000
N_THEORY_Q = 100_000


def resolve_target(top_fraction: float | None, target_kl: float | None, target_mean: float | None) -> dict:
    given = [x is not None for x in (top_fraction, target_kl, target_mean)]
    if sum(given) != 1:
        raise ParameterError("give exactly one of --top-fraction, --target-kl, --target-mean")
    if top_fraction is not None:
        if not 0 < top_fraction < 1:
            raise ParameterError(f"--top-fraction must be in (0, 1), got {top_fraction}")
        return {"target_kl": -math.log(top_fraction), "top_fraction": top_fraction, "target_mean": None}
    if target_kl is not None and target_kl <= 0:
        raise ParameterError(f"--target-kl must be positive, got {target_kl}")
    return {"target_kl": target_kl, "top_fraction": None, "target_mean": target_mean}


def tune_criterion(
    store: Path,
    criterion: str,
    model_dir: Path,
    *,
    top_fraction: float | None = None,
    target_kl: float | None = None,
    target_mean: float | None = None,
    seed: int = 0,
    cfg: TuneConfig | None = None,
    n_bank: int = 10_000,
    progress=None,
    warm: bool = True,
) -> dict:
    """Tune, measure against theory, write the flow, figures, summary and bank; return the summary.
    ``warm``: start from the store's cached flow of this criterion and model where there is one
    (``cached_flow``; recorded in the summary as ``warm_start``)."""
    t0 = time.perf_counter()
    target = resolve_target(top_fraction, target_kl, target_mean)
    gen: Generator = load_model(model_dir)
    crit = criteria.get(criterion)
    T = gen.meta["points_per_week"]
    criteria.check(crit, T=T)
    cfg = dataclasses.replace(cfg or TuneConfig(), seed=seed)

    def f_latent(z):  # the training criterion, signed so that BTGM maximises it
        return crit.train(gen.decode_kw(z)[0])

    name = f"{criterion}-n{gen.meta['group_size']}"
    model_sha = sha256_file(Path(model_dir) / "weights.pt")
    cached = cached_flow(Path(store) / "tuned" / name, model_sha, cfg) if warm else None
    res = tune(
        f_latent,
        gen.latent_dim,
        target["target_kl"],
        cfg,
        progress=progress,
        target_mean=None if target["target_mean"] is None else crit.direction * target["target_mean"],
        warm=cached[:2] if cached else None,
    )
    norm = res.normaliser
    # theory and efficiency on the normalised training criterion
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed + 99)
        f_p = torch.cat([norm(f_latent(torch.randn(BATCH, gen.latent_dim, generator=g))) for _ in range(N_THEORY_P // BATCH)])
        f_p = f_p.double().numpy()  # (N_THEORY_P rounded down to batches,)
        zs, lq, lp = [], [], []
        for _ in range(N_THEORY_Q // BATCH):
            z, log_q, log_p = res.flow.sample(BATCH, generator=g)
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
    run = f"{criterion}-n{gen.meta['group_size']}-s{seed}-kl{res.kl:.2f}"
    weights = bank_weights(lp_b.numpy() - lq_b.numpy())  # (n_bank,) log p/q: ESS, k̂ and verdict, computed once
    summary = {
        "criterion": criterion,
        "unit": crit.unit,
        "direction": crit.direction,
        "group_size": gen.meta["group_size"],
        "target_kl": target["target_kl"],
        "top_fraction": target["top_fraction"],
        "target_mean": target["target_mean"],
        "beta": res.beta,
        "beta_criterion_units": res.beta / norm.std,
        "kl": kl_hat,
        "kl_search": res.kl,
        "converged": res.converged,
        "warm_start": None if cached is None else {"run": cached[2], "beta": cached[1]},
        "mean_f": float(f_hard_q.mean()),
        "mean_f_under_p": float(f_hard_p.mean()),
        "mean_f_tilde": mean_hat,
        "mean_f_tilde_under_p": float(f_p.mean()),
        "pareto_efficiency": eff,
        "beta_star": beta_star,
        "mean_f_tilde_star": mean_star,
        "normaliser": dataclasses.asdict(norm),
        "path": res.path,
        "theory": {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in theory.items()},
        "theory_points_flagged": int((~theory["usable"]).sum()),
        "min_ess": MIN_ESS,
        "ess_of_bank_weights": weights["ess"],
        "bank_weights": weights,
        "model": str(model_dir),
        "model_sha256": model_sha,
        "seed": seed,
        "n_bank": n_bank,
        "bank_schema": bank.SCHEMA_VERSION,
        "tune_config": dataclasses.asdict(cfg),
        "code_version": code_version(),
        "run": run,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    store = Path(store)
    # the bank first, then the tuned folder whose summary points at it: a run killed between the two leaves
    # the previous summary (and its bank) in place, so the step is still stale and reruns
    table = bank.curves_table(curves, peaks, gen.meta["group_size"], z.numpy())
    lq_np, lp_np = lq_b.numpy().astype(np.float64), lp_b.numpy().astype(np.float64)  # (n_bank,)
    table = table.append_column("log_q", pa.array(lq_np)).append_column("weight", pa.array(np.exp(lp_np - lq_np)))
    table = table.append_column("source", pa.array(["btgm"] * n_bank)).append_column("beta", pa.array(np.full(n_bank, res.beta)))
    table = table.append_column("run", pa.array([run] * n_bank))
    bank_file = (
        store / "banks" / f"criterion={criterion}" / f"group_size={gen.meta['group_size']}" / f"run={run}" / "part-0.parquet"
    )
    bank.write(
        table,
        bank_file,
        model=model_dir,
        model_sha256=model_sha,
        seed=seed,
        tz=gen.meta.get("tz", "unknown"),
        source="btgm",
        criterion=criterion,
        target=json.dumps(target),
        kl=f"{kl_hat:.6f}",
        weights_ess=f"{summary['bank_weights']['ess']:.1f}",
        weights_pareto_k=str(summary["bank_weights"]["pareto_k"]),
        good_for=summary["bank_weights"]["good_for"],
        flow=str(store / "tuned" / name),
        run=run,
    )
    summary["bank"] = str(bank_file)
    summary["flow_dir"] = str(store / "tuned" / name)
    with atomic_dir(store / "tuned" / name, overwrite=True) as out:
        checkpoint.save(
            {
                "flow": res.flow.state_dict(),
                "dim": gen.latent_dim,
                "transforms": cfg.transforms,
                "hidden": cfg.hidden,
                "normaliser": dataclasses.asdict(norm),
                "beta": res.beta,
                "model": str(model_dir),
                "model_sha256": model_sha,
                "run": run,
            },
            out / "flow.pt",
        )
        (out / "pareto.png").write_bytes(pareto_figure(theory, res.path, kl_hat, mean_hat, name))
        (out / "summary.json").write_text(to_json(summary, f"the summary of {name}", indent=1))
    return summary


def bank_weights(log_w: np.ndarray) -> dict:
    """What a tuned bank is good for, from its importance weights p/q (ESS and Pareto k̂): scenarios to look
    at and feed to simulators always; estimates under p only when the weights pass."""
    d = diagnose(log_w)
    if d["reliable"]:
        d["good_for"] = (
            f"scenarios to look at and to feed to simulators, and estimates under p with the weight column "
            f"(ESS {d['ess']:.0f}, Pareto k̂ {d['pareto_k']:.2f})"
        )
    else:
        d["good_for"] = (
            "scenarios to look at and to feed to simulators; NOT estimates under p: "
            + "; ".join(d["problems"])
            + " (for probabilities under p use `energy-btgm compare`, whose proposal is built for the event)"
        )
    return d


def cached_flow(path: Path, model_sha256: str, cfg: TuneConfig) -> tuple[LatentFlow, float, str] | None:
    """The flow cached under ``tuned/<criterion>-nN/`` (its β and run) if it was tuned on this model with
    this flow's shape, else None: a warm start for the next tune of the same criterion."""
    try:
        flow, ck = load_flow(path)
    except (FileNotFoundError, ValueError):
        return None
    same = ck.get("model_sha256") == model_sha256 and (ck["transforms"], ck["hidden"]) == (cfg.transforms, cfg.hidden)
    return (flow, float(ck["beta"]), str(ck.get("run"))) if same and cfg.passes is None else None


def load_flow(path: Path) -> tuple[LatentFlow, dict]:
    """A saved tuned flow (``tuned/<name>/flow.pt``), or a clear error saying what to run."""
    path = Path(path)
    f = path / "flow.pt" if path.is_dir() else path
    if not f.exists():
        raise FileNotFoundError(f"no tuned flow at {f}; run `energy-btgm tune CRITERION --group-size N`")
    ck = checkpoint.load(f, fix="delete it and rerun `energy-btgm tune`")
    flow = LatentFlow(ck["dim"], ck["transforms"], ck["hidden"])
    flow.load_state_dict(ck["flow"])
    return flow.eval(), ck
