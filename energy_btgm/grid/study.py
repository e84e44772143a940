"""The grid study: how likely a week overloads the transformer or takes a bus out of its voltage band.

``run_study`` lays scenarios on a network (``network``), runs an AC power flow at every step of
every week (``powerflow``) and records, per scenario, the largest transformer and line loading, the
lowest and highest bus voltage, and when in the week they happen. It answers the planner's question
three ways, each charged the wall time of its power flows:

- **the tuned bank**, with its importance weights ``p/q̂``: ``P(E) = E_q̂[w·1{E}]``, with the weights'
  ESS and Pareto k̂. Where they fail (k̂ > 0.7 or ESS < 100, the usual case for a bank tuned to the
  top 1 % and an event further out),
- **a proposal built for the event**: under the allocation rule every load follows the group curve,
  so the transformer's loading at a step rises with the group's demand at that step, and the event
  "loading above the limit" is "weekly peak above t*", t* found by bisection on the power flow. The
  comparison's proposal (BTGM flows tuned toward that tail with defensive components,
  ``estimate.proposal``) is built for ``peak ≥ t*`` inside the budget and sampled until it is spent.
  The estimate is unbiased whatever t* is (t* only makes it efficient);
- **rejection sampling**: weeks drawn from p (the model's prior) for the same wall time, power flows
  included, with a Wilson interval.

A step whose power flow does not converge is recorded (scenario, step, time of week) and left out
of that week's metrics; the study goes on.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import criteria
from energy_btgm import bank, faults
from energy_btgm.core.weights import diagnose
from energy_btgm.errors import ParameterError
from energy_btgm.estimate.estimators import weighted_estimates, wilson
from energy_btgm.estimate.modes import ModesConfig, find_modes
from energy_btgm.estimate.proposal import scorer
from energy_btgm.grid.config import StudyConfig
from energy_btgm.grid.network import allocation, check_fit, injections, load_net, study_net
from energy_btgm.grid.powerflow import BatchPowerFlow
from energy_btgm.model.vae import Generator, load_model
from energy_btgm.store import code_version, sha256_file

CHUNK = 32  # scenarios per batched solve: 32 weeks of half-hours is 10,752 power flows
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def when(step: int, T: int) -> str:
    """A step of the week as people read it: ``Mon 18:30``."""
    minutes = int(step) * 10080 // T
    return f"{DAYS[minutes // 1440]} {minutes % 1440 // 60:02d}:{minutes % 60:02d}"


class Study:
    """A network ready for weeks of load: the solver, the allocation and the limits."""

    def __init__(self, cfg: StudyConfig, net=None):
        cfg.validate()
        self.cfg = cfg
        self.net = study_net(load_net(cfg.grid) if net is None else net, cfg.grid)
        self.share = allocation(self.net)
        self.solver = BatchPowerFlow(self.net)
        self.failures: list[dict] = []
        self.solved, self.solve_seconds = 0, 0.0  # power flows of the weeks simulated, and their time

    def weeks(self, curves_kw: np.ndarray, source: str, first_id: int = 0) -> pd.DataFrame:
        """Per week (S rows): the largest transformer and line loading [%], the lowest and highest bus
        voltage [pu], when each happens, and the steps that did not converge (recorded in ``failures``)."""
        S, T = curves_kw.shape
        p, q = injections(curves_kw, self.share, self.cfg.grid_config())  # (S, T, L)
        t0 = time.perf_counter()
        r = self.solver.solve(p.reshape(S * T, -1), q.reshape(S * T, -1))
        self.solved, self.solve_seconds = self.solved + S * T, self.solve_seconds + time.perf_counter() - t0
        r = {k: v.reshape(S, T) for k, v in r.items()}
        out = {"source": [source] * S, "scenario_id": np.arange(first_id, first_id + S)}
        for key, worst in (
            ("trafo_loading_pct", np.nanargmax),
            ("line_loading_pct", np.nanargmax),
            ("vm_min_pu", np.nanargmin),
            ("vm_max_pu", np.nanargmax),
        ):
            v = r[key]
            any_ok = np.isfinite(v).any(1)
            at = np.array([worst(row) if ok else 0 for row, ok in zip(v, any_ok)])
            out[key] = np.where(any_ok, v[np.arange(S), at], np.nan)
            out[key.rsplit("_", 1)[0] + "_at"] = [when(a, T) if ok else "" for a, ok in zip(at, any_ok)]
        bad = ~r["converged"]
        out["failed_steps"] = bad.sum(1)
        for s, t in zip(*np.nonzero(bad)):
            self.failures.append({"source": source, "scenario_id": int(first_id + s), "step": int(t), "time": when(t, T)})
        return pd.DataFrame(out)

    def events(self, weeks: pd.DataFrame) -> dict[str, np.ndarray]:
        """The two events per week: transformer above its limit; a bus outside the voltage band."""
        return {
            "trafo_overload": (weeks["trafo_loading_pct"] > self.cfg.trafo_limit).to_numpy(),
            "voltage_out_of_band": ((weeks["vm_min_pu"] < self.cfg.v_min) | (weeks["vm_max_pu"] > self.cfg.v_max)).to_numpy(),
        }

    def peak_threshold_kw(self, group_peak_kw: float) -> float | None:
        """t*: the group demand [kW] above which the transformer exceeds its limit (every load follows the
        group curve, so loading rises with the group's demand); None if no demand up to 20× the largest
        seen does it."""
        cfg = self.cfg.grid_config()
        lo, hi = 0.0, 20 * group_peak_kw
        for _ in range(4):  # a grid of demands, then finer ones around the crossing: 200^-4 of the range
            kw = np.linspace(lo, hi, 201)[1:]  # (200,)
            p, q = injections(kw[:, None], self.share, cfg)  # (200, 1, L)
            over = np.flatnonzero(self.solver.solve(p[:, 0], q[:, 0])["trafo_loading_pct"] > self.cfg.trafo_limit)
            if not len(over):
                return None if lo == 0.0 else float(hi)
            i = over[0]
            lo, hi = (kw[i - 1] if i else lo), kw[i]
        return float(hi)


def _decode(gen: Generator, z: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return gen.decode_kw(z)[0].double().numpy()


def _estimate(study: Study, weeks: pd.DataFrame, w: np.ndarray, group: np.ndarray | None = None) -> dict:
    """P(event) with a 95 % interval for each event, by importance sampling (w = 1: plain Monte-Carlo), and
    the diagnostics of the weights that carry it: ESS and Pareto k̂ of w on the weeks with the event (the
    others add w·0; a function-specific k̂, as Vehtari et al. 2024 recommend for one expectation)."""
    out = {}
    group = np.zeros(len(w), np.int64) if group is None else group
    for name, hit in study.events(weeks).items():
        e = weighted_estimates(hit.astype(float), w, 0.5, 0.5, group)
        on = hit & (w > 0)
        d = (
            diagnose(np.log(w[on]), group[on])
            if on.any()
            else {
                "ess": 0.0,
                "pareto_k": None,
                "reliable": False,
                "problems": ["no week with the event: nothing to estimate from"],
            }
        )
        out[name] = {
            "p": e["exceedance"],
            "ci": e["exceedance_ci"],
            "hits": int(hit.sum()),
            "ess": d["ess"],
            "pareto_k": d["pareto_k"],
            "reliable": d["reliable"],
            "problems": d["problems"],
        }
    return out


def _rejection(study: Study, gen: Generator, seconds: float, seed: int, progress) -> tuple[pd.DataFrame, dict, float]:
    g = torch.Generator().manual_seed(seed + 11)
    t0, frames, n = time.perf_counter(), [], 0
    while time.perf_counter() - t0 < seconds or not frames:
        frames.append(study.weeks(_decode(gen, torch.randn(CHUNK, gen.latent_dim, generator=g)), "rejection", n))
        n += CHUNK
        progress(min(time.perf_counter() - t0, seconds))
    weeks = pd.concat(frames, ignore_index=True)
    est = {}
    for name, hit in study.events(weeks).items():
        k = int(hit.sum())
        est[name] = {"p": k / len(hit), "ci": list(wilson(k, len(hit))), "hits": k}
    weeks["weight"] = 1.0
    return weeks, est, time.perf_counter() - t0


def _in_store(bank_path: Path, recorded: str, folder: str) -> Path:
    """A path the bank's metadata records (relative to where its tune ran), found from the bank's own store
    when the working directory differs: ``<store>/<folder>/<name>``, the store being the bank's ``banks/`` parent."""
    path = Path(recorded)
    if path.exists():
        return path
    parents = [p for p in Path(bank_path).resolve().parents if p.name == "banks"]
    return parents[0].parent / folder / path.name if parents else path


def _tune_seconds(meta: dict) -> float | None:
    """What the tune that wrote the bank cost (its summary's seconds), where the summary is still that run's."""
    try:
        s = json.loads((Path(meta["flow"]) / "summary.json").read_text())
    except (KeyError, OSError, ValueError):
        return None
    return s.get("seconds") if s.get("run") == meta.get("run") else None


def _proposal(study: Study, gen: Generator, t_star: float, seconds: float, seed: int, progress):
    """Build the mode-finding proposal for peak ≥ t* (``estimate.modes``: found from the model, no flow to
    train) and sample it with power flows until ``seconds`` are spent."""
    t0 = time.perf_counter()
    q, search = find_modes(scorer(gen, criteria.get("weekly-peak")), gen.latent_dim, t_star, ModesConfig(n=8000), seed=seed)
    prep = time.perf_counter() - t0
    rng = np.random.default_rng(seed + 1)
    frames, weights, n = [], [], 0
    while time.perf_counter() - t0 < seconds or not frames:
        z = q.sample(CHUNK, rng)
        frames.append(study.weeks(_decode(gen, torch.as_tensor(z, dtype=torch.float32)), "proposal", n))
        weights.append(np.exp(q.log_weight(z)))
        n += CHUNK
        progress(min(time.perf_counter() - t0, seconds))
    weeks = pd.concat(frames, ignore_index=True)
    weeks["weight"] = w = np.concatenate(weights)
    est = _estimate(study, weeks, w)
    info = {
        "kind": "mode-finding mixture (multilevel cross-entropy)",
        "components": search["components"],
        "levels": len(search["levels"]),
        "prepare_seconds": round(prep, 1),
        "peak_threshold_kw": t_star,
    }
    return weeks, est, info, time.perf_counter() - t0


def run_study(bank_path: Path, cfg: StudyConfig, progress: bool = False, net=None) -> dict:
    """The study of a bank on ``cfg.grid``; returns the result (``weeks``: every simulated week, in
    ``result["weeks"]`` as a DataFrame; the rest JSON-ready)."""
    cfg.validate()
    b = bank.read(bank_path)
    meta = b.attrs["meta"]
    X = b.attrs["load_kw"].astype(np.float64)  # (N, T) kW
    resolution = int(meta["time_resolution_min"])
    if cfg.resolution_min and resolution != cfg.resolution_min:
        raise ParameterError(
            f"bank {bank_path} is at {resolution}-minute resolution and the study expects {cfg.resolution_min} "
            f"minutes; pass --resolution-min {resolution} or study a bank at {cfg.resolution_min} minutes"
        )
    model_dir = _in_store(bank_path, meta["model"], "models")
    meta = meta | ({"flow": str(_in_store(bank_path, meta["flow"], "tuned"))} if "flow" in meta else {})
    gen = load_model(model_dir)
    if sha256_file(model_dir / "weights.pt") != meta["model_sha256"]:
        raise ValueError(f"bank {bank_path} came from another version of model {model_dir}; rerun `energy-btgm tune`")
    group_size = int(gen.meta["group_size"])
    study = Study(cfg, net)
    fit_note = check_fit(len(study.net.load), group_size, cfg.grid_config(), cfg.grid)
    bar = _Bar(progress)

    # 1. the tuned bank's scenarios, with their weights
    n = min(cfg.scenarios, len(X))
    t0 = time.perf_counter()
    bar.start("grid study: bank weeks", n)
    frames = []
    for i in range(0, n, CHUNK):
        faults.point("grid bank chunk")
        frames.append(study.weeks(X[i : i + CHUNK][: n - i], "bank", i))
        bar.update(min(CHUNK, n - i))
    bank_weeks = pd.concat(frames, ignore_index=True)
    bank_seconds = time.perf_counter() - t0
    tuned = "weight" in b
    log_w = np.log(b["weight"].to_numpy(np.float64)[:n]) if tuned else np.zeros(n)
    bank_weeks["weight"] = np.exp(log_w)
    bank_est = _estimate(study, bank_weeks, np.exp(log_w))
    event = bank_est["trafo_overload"]  # the study's headline event decides whether the bank's weights can carry it
    overall = diagnose(log_w)
    bank_part = {
        "scenarios": n,
        "seconds": round(bank_seconds, 1),
        "tuned": tuned,
        "estimates": bank_est,
        "reliable": bool(event["reliable"] or not tuned),
        "problems": event["problems"],
        "all_weights": {"ess": overall["ess"], "pareto_k": overall["pareto_k"], "reliable": overall["reliable"]},
        "tune_seconds": _tune_seconds(meta),
        "scenarios_per_second": n / bank_seconds,
    }

    # 2. BTGM's estimate: the bank's, or a proposal built for the event when its weights fail
    t_star = study.peak_threshold_kw(float(b["peak_kw"].max()))
    t_star_group = t_star  # group demand before growth, like the bank's curves
    if cfg.estimator == "bank" or (cfg.estimator == "auto" and bank_part["reliable"]):
        btgm = {
            "method": "tuned bank",
            "estimates": bank_est,
            "seconds": bank_seconds,
            "scenarios": n,
            "why": (
                "the bank's weights on its overload weeks pass (ESS and Pareto k̂)"
                if bank_part["reliable"]
                else "asked for (--estimator bank), although its weights fail: " + "; ".join(event["problems"])
            )
            if tuned
            else "the bank is drawn from p",
        }
        prop_weeks = None
    elif t_star_group is None:
        btgm = {
            "method": "tuned bank",
            "estimates": bank_est,
            "seconds": bank_seconds,
            "scenarios": n,
            "why": "the transformer cannot reach its limit at any demand tried: no event to build a proposal for",
        }
        prop_weeks = None
    else:
        bar.start("grid study: event proposal", cfg.seconds, seconds=True)
        prop_weeks, prop_est, info, prop_seconds = _proposal(study, gen, t_star_group, cfg.seconds, cfg.seed, bar.to)
        btgm = {
            "method": "proposal built for the event",
            "estimates": prop_est,
            "seconds": prop_seconds,
            "scenarios": len(prop_weeks),
            "proposal": info,
            "why": (
                "asked for (--estimator proposal)"
                if cfg.estimator == "proposal"
                else "the tuned bank's weights on its overload weeks fail (" + "; ".join(event["problems"]) + ")"
            )
            + ", so the study drew from a "
            f"proposal built for the event (weekly peak of the group ≥ {t_star_group:.1f} kW)",
        }

    # 3. rejection sampling for the same wall time
    seconds = max(btgm["seconds"], 1.0)
    bar.start("grid study: rejection", seconds, seconds=True)
    rej_weeks, rej_est, rej_seconds = _rejection(study, gen, seconds, cfg.seed, bar.to)
    bar.close()
    rejection = {"estimates": rej_est, "seconds": rej_seconds, "scenarios": len(rej_weeks)}
    weeks = pd.concat([w for w in (bank_weeks, prop_weeks, rej_weeks) if w is not None], ignore_index=True)
    return {
        "grid": cfg.grid,
        "grid_summary": {
            "buses": len(study.net.bus),
            "loads": len(study.net.load),
            "lines": len(study.net.line),
            "trafos": len(study.net.trafo),
            "trafo_rating_kva": [round(1000 * s, 1) for s in study.net.trafo.sn_mva],
        },
        "allocation": "the group curve shared over the loads by rated apparent power",
        "fit_note": fit_note,
        "bank": str(bank_path),
        "bank_sha256": [sha256_file(f) for f in bank._files(bank_path)],
        "criterion": meta.get("criterion", meta.get("source")),
        "model": str(model_dir),
        "model_sha256": meta["model_sha256"],
        "group_size": group_size,
        "resolution_min": resolution,
        "config": dataclasses.asdict(cfg),
        "peak_threshold_kw": t_star_group,
        "bank_study": bank_part,
        "btgm": btgm,
        "rejection": rejection,
        "failures": {"count": len(study.failures), "first": study.failures[:50]},
        "power_flows_per_second": study.solved / max(study.solve_seconds, 1e-9),
        "code_version": code_version(),
        "weeks": weeks,
    }


class _Bar:
    """One tqdm bar at a time (or none): of weeks, or of seconds of a budget."""

    def __init__(self, on: bool):
        self.on, self.bar = on, None

    def start(self, desc: str, total: float, seconds: bool = False) -> None:
        self.close()
        if self.on:
            from tqdm import tqdm

            fmt = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s" if seconds else None
            self.bar = tqdm(total=total, desc=desc, leave=False, bar_format=fmt)

    def update(self, k: float) -> None:
        if self.bar is not None:
            self.bar.update(k)

    def to(self, value: float) -> None:
        if self.bar is not None:
            self.bar.n = min(value, self.bar.total)
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar = None


def ratio(p: float, ci: list) -> float:
    """Half-width of a 95 % interval relative to its estimate (inf when the estimate is 0)."""
    return (ci[1] - ci[0]) / 2 / p if p > 0 else math.inf


def out_dir_for(reports: Path, result: dict) -> Path:
    """Where a study is written under the reports folder (and where ``report`` finds it)."""
    grid = Path(result["grid"]).stem if result["grid"].lower().endswith(".json") else result["grid"]
    return Path(reports) / "grid" / f"{grid}-{result['criterion']}-n{result['group_size']}"


def _figures(result: dict, curves_kw: np.ndarray) -> dict[str, bytes]:
    """The loading distribution under p and under the tuned bank; the worst weeks of the bank."""
    from energy_btgm.core.figures import new_figure, png_bytes

    weeks, cfg = result["weeks"], result["config"]
    fig, ax = new_figure(1, figsize=(8, 3.4))
    lo, hi = np.nanmin(weeks["trafo_loading_pct"]), np.nanmax(weeks["trafo_loading_pct"])
    bins = np.linspace(lo, max(hi, cfg["trafo_limit"] * 1.02), 60)
    for source, label in (("rejection", "under p (rejection sampling)"), ("bank", "tuned bank (q̂, unweighted)")):
        x = weeks.loc[weeks["source"] == source, "trafo_loading_pct"].dropna()
        if len(x):
            ax.hist(x, bins=bins, density=True, histtype="step", lw=1.5, label=f"{label}, {len(x):,} weeks")
    prop = weeks[weeks["source"] == "proposal"]
    if len(prop):
        ax.hist(
            prop["trafo_loading_pct"].fillna(0),
            bins=bins,
            weights=prop["weight"] / len(prop),
            density=False,
            histtype="step",
            lw=1.5,
            ls="--",
            label="under p, from the event proposal (weighted)",
        )
    ax.axvline(cfg["trafo_limit"], color="k", lw=1, ls=":", label=f"limit {cfg['trafo_limit']:g} %")
    ax.set(
        yscale="log",
        xlabel="largest transformer loading in the week [%]",
        ylabel="density",
        title=f"{result['grid']}: weekly transformer loading, demand × {cfg['growth']:g}",
    )
    ax.legend(fontsize=7)
    loading = png_bytes(fig)

    bank_weeks = weeks[weeks["source"] == "bank"]
    worst = bank_weeks.nlargest(5, "trafo_loading_pct")
    fig, ax = new_figure(1, figsize=(9, 3.4))
    T = curves_kw.shape[1]
    hours = np.arange(T) * 168.0 / T
    for _, row in worst.iterrows():
        ax.plot(
            hours,
            curves_kw[int(row["scenario_id"])] * cfg["growth"],
            lw=0.8,
            label=f"scenario {int(row['scenario_id'])}: {row['trafo_loading_pct']:.0f} % at {row['trafo_loading_at']}",
        )
    if result["peak_threshold_kw"]:
        ax.axhline(
            result["peak_threshold_kw"] * cfg["growth"],
            color="k",
            lw=1,
            ls=":",
            label=f"demand at which the transformer reaches {cfg['trafo_limit']:g} %",
        )
    ax.set(
        xlabel="hour of week (Monday 00:00 local)",
        ylabel="grid demand [kW]",
        xticks=range(0, 169, 24),
        title="the tuned bank's five weeks that load the transformer most",
    )
    ax.legend(fontsize=7)
    return {"loading.png": loading, "worst_weeks.png": png_bytes(fig)}


def write_study(result: dict, curves_kw: np.ndarray, out: Path) -> Path:
    """Write ``study.json``, ``weeks.parquet`` (every simulated week) and the figures into ``out``, atomically."""
    import pyarrow as pa

    from energy_btgm.store import atomic_dir, atomic_write_parquet, to_json

    figures = _figures(result, curves_kw)
    doc = {k: v for k, v in result.items() if k != "weeks"}
    text = to_json(doc, f"the grid study {out}", indent=1)
    with atomic_dir(Path(out), overwrite=True) as d:
        atomic_write_parquet(d / "weeks.parquet", pa.Table.from_pandas(result["weeks"], preserve_index=False))
        for name, png in figures.items():
            (d / name).write_bytes(png)
        (d / "study.json").write_text(text)
    return Path(out) / "study.json"


def latest_bank(store: Path, criterion: str = "weekly-peak", group_size: int = 100) -> Path:
    """The bank of the store's last tune of ``criterion`` for ``group_size``, or a clear error saying what to run."""
    summary = Path(store) / "tuned" / f"{criterion}-n{group_size}" / "summary.json"
    if not summary.exists():
        raise FileNotFoundError(
            f"no tuned {criterion} bank for groups of {group_size} in {store}; run "
            f"`energy-btgm tune {criterion} --group-size {group_size}` or give the bank's path"
        )
    bank_path = Path(json.loads(summary.read_text())["bank"])
    parts = bank_path.parts
    # the summary records the path as the tune saw it; rebuild it under this store (the cwd may differ)
    return Path(store).joinpath(*parts[parts.index("banks") :]) if "banks" in parts else bank_path


def study_bank(bank_path: Path, cfg: StudyConfig, reports: Path, out: Path | None = None, progress: bool = False) -> dict:
    """Run the study of a bank and write it (``out``, default under ``reports/grid/``); the result, with
    ``study_json`` its path and without the weeks."""
    result = run_study(Path(bank_path), cfg, progress=progress)
    path = write_study(result, bank.read(bank_path).attrs["load_kw"], Path(out) if out else out_dir_for(reports, result))
    result.pop("weeks")
    return result | {"study_json": str(path)}
