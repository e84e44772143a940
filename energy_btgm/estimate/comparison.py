"""BTGM against rejection sampling on extreme quantiles, each charged the same wall-clock budget.

For each level u (e.g. 0.99, 0.999, 0.9999) of the criterion's hard version under p:
- rejection sampling (crude Monte-Carlo on p) draws samples of p for ``seconds``;
- BTGM prepares its proposal (by default the mode-finding cross-entropy mixture of
  ``estimate.modes``; with ``proposal="flows"`` a tuned flow with defensive components and
  refinement, ``estimate.proposal``), charged to its budget, then samples it for the rest of it;
- both are estimated by ``estimate.estimators`` and held against a reference: ≥ 10^7 samples of p,
  computed once per model and criterion and cached by the model's checksum.
Also per method: diversity factor and ADMD in the bulk and in the top 1 − u, decoder evaluations,
seconds, and the seconds to produce 10,000 effective scenarios in the tail.

A minimised criterion (direction −1, e.g. ``mae-flatness-min``) is compared through its negation:
its level u is the lower (1 − u)-quantile, and ``compare.json`` holds the criterion's own values.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

import criteria
from energy_btgm import faults
from energy_btgm.core import BATCH
from energy_btgm.core.weights import diagnose
from energy_btgm.errors import ParameterError
from energy_btgm.estimate.estimators import df_admd, masses, rejection_estimates, weighted_estimates
from energy_btgm.estimate.modes import ModesConfig, find_modes
from energy_btgm.estimate.proposal import PROPOSAL_CONFIG, prepare_proposal, sample_proposal, score, scorer
from energy_btgm.model.vae import Generator, load_model
from energy_btgm.store import atomic_write_json, atomic_write_npz, sha256_file
from energy_btgm.tuning.engine import TuneConfig


def reference(
    gen: Generator, crit_name: str, cache_dir: Path, n: int = 10_000_000, seed: int = 2024, progress: bool = False
) -> dict[str, np.ndarray]:
    """n samples of p (f, peak, df), cached under ``cache_dir`` by model checksum, criterion and n."""
    key = f"{sha256_file(Path(gen.path) / 'weights.pt')[:16]}-{crit_name}-{n}-{seed}"
    path = Path(cache_dir) / f"reference-{key}.npz"
    if path.exists():
        d = np.load(path)
        return {k: d[k] for k in d.files}
    crit = criteria.get(crit_name)
    g = torch.Generator().manual_seed(seed)
    parts = {"f": [], "peak": [], "df": []}
    it = range(0, n, BATCH)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc=f"reference: {n:,} samples of p", unit=" batch")
    for i in it:
        s = score(gen, crit, torch.randn(min(BATCH, n - i), gen.latent_dim, generator=g))
        for k in parts:
            parts[k].append(s[k].astype(np.float32))
    out = {k: np.concatenate(v) for k, v in parts.items()}
    atomic_write_npz(path, **out)
    return out


def _ticker(progress: bool, desc: str, seconds: float):
    """A tqdm bar over a budget of seconds (called with the seconds spent), or nothing."""
    if not progress:
        return lambda spent: None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=round(seconds), desc=desc, leave=False, bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s")

    def tick(spent: float) -> None:
        bar.n = min(round(spent), bar.total)
        bar.refresh()

    return tick, bar.close


def run_rejection(gen, crit, seconds: float, seed: int, progress: bool = False) -> tuple[dict, float, int]:
    g = torch.Generator().manual_seed(seed)
    score(gen, crit, torch.randn(256, gen.latent_dim, generator=g))  # warm up
    tick, done = _ticker(progress, "rejection sampling", seconds)
    t0 = time.perf_counter()
    parts = {"f": [], "peak": [], "df": []}
    while time.perf_counter() - t0 < seconds:
        s = score(gen, crit, torch.randn(BATCH, gen.latent_dim, generator=g))
        for k in parts:
            parts[k].append(s[k])
        tick(time.perf_counter() - t0)
    done()
    out = {k: np.concatenate(v) for k, v in parts.items()}
    return out, time.perf_counter() - t0, len(out["f"])


def run_btgm(gen, crit, u: float, seconds: float, seed: int, cfg: TuneConfig, progress: bool = False) -> tuple:
    """Prepare the proposal (counted in the budget), then sample it until the budget is spent: the draws
    (f, peak, df, w, group), the preparation's and the whole run's seconds, and the decoder evaluations."""
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(seed + 1)
    prop, pilot = prepare_proposal(gen, crit, u, cfg, seed, g)
    rest = sample_proposal(gen, crit, prop, max(seconds - (time.perf_counter() - t0), 0.0), g)
    out = {k: np.concatenate([pilot[k], rest[k]]) for k in pilot}
    return out, prop.train_seconds, time.perf_counter() - t0, prop.train_evals + len(out["f"])


def run_modes(gen, crit, u: float, seconds: float, seed: int, cfg: TuneConfig | None = None, progress: bool = False) -> tuple:
    """The mode-finding proposal (``estimate.modes``): the multilevel cross-entropy search for the tail of
    mass 1.5·(1 − u) (counted in the budget), then draws of the mixture until the budget is spent. Called
    like ``run_btgm``; it trains no flow, so ``cfg`` is unused."""
    t0 = time.perf_counter()
    tick, done = _ticker(progress, f"BTGM at {u:g}", seconds)
    q, search = find_modes(scorer(gen, crit), gen.latent_dim, cfg=ModesConfig(n=8000), seed=seed, mass=min(1.5 * (1 - u), 0.5))
    t_train = time.perf_counter() - t0
    rng = np.random.default_rng(seed + 1)
    parts = {"f": [], "peak": [], "df": [], "w": []}
    while time.perf_counter() - t0 < seconds or not parts["f"]:
        z = q.sample(BATCH, rng)
        s = score(gen, crit, torch.as_tensor(z, dtype=torch.float32))
        for k in ("f", "peak", "df"):
            parts[k].append(s[k])
        parts["w"].append(np.exp(q.log_weight(z)))
        tick(time.perf_counter() - t0)
    done()
    out = {k: np.concatenate(v) for k, v in parts.items()}
    out["group"] = np.zeros(len(out["f"]), np.int64)
    return out, t_train, time.perf_counter() - t0, search["evaluations"] + len(out["f"])


def _unsigned(entry: dict, sign: int) -> dict:
    """A level's quantiles back on the criterion's own scale (a minimised criterion ran on −f)."""
    if sign == 1:
        return entry
    for part in ("reference", "rejection", "btgm"):
        e = entry[part]
        e["quantile"] = -e["quantile"]
        if "quantile_ci" in e:
            e["quantile_ci"] = sorted(-v for v in e["quantile_ci"])
    if "real_test_quantile" in entry:
        entry["real_test_quantile"] = -entry["real_test_quantile"]
    return entry


def out_dir_for(reports: Path, criterion: str, group_size: int) -> Path:
    """Where a comparison is written under the reports folder (and where ``report`` finds it)."""
    return Path(reports) / "compare" / f"{criterion}-n{group_size}"


def compare(
    model_dir: Path,
    criterion: str,
    levels: list[float],
    seconds: float,
    out_dir: Path,
    cache_dir: Path,
    seed: int = 0,
    n_reference: int = 10_000_000,
    cfg: TuneConfig | None = None,
    real_test: np.ndarray | None = None,
    progress: bool = False,
    proposal: str = "modes",
) -> dict:
    """Run the comparison and write ``compare.json`` in ``out_dir``; return its content. ``proposal``: the
    mode-finding mixture (``estimate.modes``, the default) or BTGM's flows (``estimate.proposal``)."""
    gen = load_model(model_dir)
    crit = criteria.get(criterion)
    sign = crit.direction
    if sign == -1:  # the lower tail of f is the upper tail of −f: everything below runs on −f
        crit = dataclasses.replace(crit, fn=lambda x, fn=crit.fn: -fn(x), train_fn=None, direction=1)
    for u in levels:
        if not 0 < u < 1:
            raise ParameterError(f"--levels must lie in (0, 1), got {u}")
    if proposal not in ("flows", "modes"):
        raise ParameterError(f"--proposal must be flows or modes, got {proposal!r}")
    cfg = cfg or PROPOSAL_CONFIG
    n_group = gen.meta["group_size"]
    curves_file = Path(gen.meta.get("curves_file", ""))
    if real_test is not None:
        real_test = sign * np.asarray(real_test)
    elif curves_file.is_file():  # the real test weeks, where there are enough of them
        from energy_btgm.data.curves import read_groups

        test = read_groups(curves_file.parent, n_group, split="test", curves_dir=curves_file.parent)
        if len(test):
            real_test = crit(torch.tensor(test.attrs["curves_kw"])).numpy()
    ref = reference(gen, criterion, cache_dir, n=n_reference, progress=progress)
    ref["f"] = sign * ref["f"]
    rs, rs_seconds, rs_n = run_rejection(gen, crit, seconds, seed, progress)
    result = {
        "criterion": criterion,
        "unit": crit.unit,
        "direction": sign,
        "model": str(model_dir),
        "model_sha256": sha256_file(Path(model_dir) / "weights.pt"),
        "group_size": n_group,
        "seconds_budget": seconds,
        "seed": seed,
        "proposal": proposal,
        "proposal_config": dataclasses.asdict(cfg),
        "reference_samples": len(ref["f"]),
        "levels": {},
    }
    rate = rs_n / rs_seconds  # curves per second on p
    bulk = df_admd(ref["df"], ref["peak"], n_group, np.ones(len(ref["df"]), bool))
    result["bulk"] = {"rejection": df_admd(rs["df"], rs["peak"], n_group, np.ones(rs_n, bool)), "reference": bulk}
    for u in levels:
        faults.point(f"compare level {u}")
        t_ref = float(np.quantile(ref["f"], u))
        k_ref = int((ref["f"] >= t_ref).sum())
        entry = {
            "reference": {
                "quantile": t_ref,
                "exceedance": k_ref / len(ref["f"]),
                "tail_samples": k_ref,
                "n": len(ref["f"]),
                "seconds": None,
                **{f"tail_{k}": v for k, v in df_admd(ref["df"], ref["peak"], n_group, ref["f"] >= t_ref).items()},
            }
        }
        rej = rejection_estimates(rs["f"], u, t_ref)
        rej.update(
            decoder_evaluations=rs_n,
            seconds=rs_seconds,
            seconds_per_10k_effective_tail=10_000 / max(rate * (1 - u), 1e-12),
            **{f"tail_{k}": v for k, v in df_admd(rs["df"], rs["peak"], n_group, rs["f"] >= rej["quantile"]).items()},
        )
        run = run_btgm if proposal == "flows" else run_modes
        bt, t_train, bt_seconds, evals = run(gen, crit, u, seconds, seed + int(u * 1e6), cfg, progress)
        est = weighted_estimates(bt["f"], bt["w"], u, t_ref, bt["group"])
        pos = bt["w"] > 0  # each stratum's draws inside it, with their weights p/q of that stratum's proposal
        d = diagnose(np.log(bt["w"][pos]), bt["group"][pos])
        # the verdict's ESS (summed over strata) beside est["ess"] (of the pooled masses): the report shows this one
        est.update(weights_ess=d["ess"], pareto_k=d["pareto_k"], weights_reliable=d["reliable"], weight_problems=d["problems"])
        sampling_seconds = max(bt_seconds - t_train, 1e-9)
        ess_tail_rate = est["ess_tail"] / sampling_seconds
        est.update(
            decoder_evaluations=evals,
            seconds=bt_seconds,
            train_seconds=t_train,
            seconds_per_10k_effective_tail=t_train + 10_000 / max(ess_tail_rate, 1e-12),
            **{
                f"tail_{k}": v
                for k, v in df_admd(
                    bt["df"], bt["peak"], n_group, (bt["f"] >= est["quantile"]) & (bt["w"] > 0), masses(bt["w"], bt["group"])
                ).items()
            },
        )
        entry["rejection"], entry["btgm"] = rej, est
        # rejection's variance is the exact binomial one at the number of samples its budget afforded
        entry["binomial_variance_rejection"] = (1 - u) * u / rs_n
        entry["variance_ratio_rejection_over_btgm"] = (
            entry["binomial_variance_rejection"] / est["exceedance_var"] if est["exceedance_var"] > 0 else None
        )
        if real_test is not None and len(real_test) * (1 - u) >= 10:  # at least 10 real weeks above it
            entry["real_test_quantile"] = float(np.quantile(real_test, u))
            entry["real_test_curves"] = int(len(real_test))
        result["levels"][str(u)] = _unsigned(entry, sign)
    atomic_write_json(Path(out_dir) / "compare.json", result)
    return result
