"""The comparison run end to end on a tiny model: both methods, one budget, compare.json."""

import json
import math
import re

import pytest

from energy_btgm.errors import ParameterError
from energy_btgm.estimate.comparison import compare
from energy_btgm.tuning.engine import TuneConfig

FAST = TuneConfig(transforms=2, hidden=32, steps=100, batch=256, n_norm=4096, n_eval=4096, max_iter=3)


def assert_agrees_with_reference(e, p, n_reference):
    """BTGM's exceedance at the reference's threshold is within 5 sd of p.

    The threshold is the reference's empirical p-quantile, so the true exceedance there is p only up to the
    reference's own binomial noise, p(1 - p) / n_reference: both variances go into the tolerance.
    """
    sd = math.sqrt(e["btgm"]["exceedance_var"] + p * (1 - p) / n_reference)
    assert abs(e["btgm"]["exceedance"] - p) < 5 * sd, (e["btgm"]["exceedance"], p, sd)


def test_compare_writes_json_with_all_methods(tiny_model, tmp_path):
    out = tmp_path / "reports" / "compare" / "weekly-peak-n10"
    r = compare(
        tiny_model / "models" / "vae-n10",
        "weekly-peak",
        [0.99],
        seconds=3,
        out_dir=out,
        cache_dir=tmp_path / "cache",
        n_reference=200_000,
        cfg=FAST,
    )
    e = r["levels"]["0.99"]
    for m in ("rejection", "btgm", "reference"):
        assert "quantile" in e[m] and "exceedance" in e[m]
    for m in ("rejection", "btgm"):
        assert e[m]["decoder_evaluations"] > 0 and e[m]["seconds"] > 0 and len(e[m]["quantile_ci"]) == 2
    assert e["reference"]["exceedance"] == pytest.approx(0.01, rel=0.01)
    assert_agrees_with_reference(e, 0.01, 200_000)
    # diagnostics beside the estimate: ESS, Pareto k̂, and the verdict that follows from them
    b = e["btgm"]
    assert b["ess"] > 0 and b["pareto_k"] is not None and b["pareto_k"] < 0.7
    assert b["weights_reliable"] == (b["weights_ess"] >= 100 and b["pareto_k"] <= 0.7)
    assert isinstance(b["weight_problems"], list) and b["weights_ess"] > 0
    saved = json.loads((out / "compare.json").read_text())
    assert saved["levels"]["0.99"]["btgm"]["quantile"] == e["btgm"]["quantile"]
    assert len(list((tmp_path / "cache").glob("reference-*.npz"))) == 1
    # the report opens with it, in words and numbers people read
    from energy_btgm.outputs.report import build

    html = build(tiny_model, tmp_path / "reports", run="check").read_text()
    glance = html.split("At a glance", 1)[1].split("</table>", 1)[0]
    assert "weekly-peak, groups of 10 homes" in glance and "1 in 100 weeks" in glance and ">99\u00a0%<" in glance
    assert f"{e['btgm']['quantile']:.4g}"[:4] in glance and ("trusted" in glance)
    assert not re.search(r"\d[eE][-+]\d", html.split("<img", 1)[0] + "".join(html.split("<table")[1:]).split("base64")[0])


def _compare_one(tiny_model, tmp_path, criterion, u, seconds, n_reference, **kw):
    """compare on the tiny 10-home model at one level, into tmp_path/out; its result and that level's entry."""
    r = compare(
        tiny_model / "models" / "vae-n10",
        criterion,
        [u],
        seconds,
        tmp_path / "out",
        tmp_path / "cache",
        n_reference=n_reference,
        **kw,
    )
    return r, r["levels"][str(u)]


def test_far_tail_of_the_weekly_peak_with_the_modes_found(tiny_model, tmp_path):
    """At 0.9999 the default proposal (the mode-finding mixture, no criterion name in its code) gives an
    estimate near the reference, with weights that pass their diagnostics."""
    r, e = _compare_one(tiny_model, tmp_path, "weekly-peak", 0.9999, 4, 400_000)
    assert r["proposal"] == "modes"
    assert e["btgm"]["train_seconds"] > 0 and e["btgm"]["decoder_evaluations"] > 8000
    assert e["reference"]["tail_samples"] >= 30
    assert_agrees_with_reference(e, 1e-4, 400_000)
    assert e["btgm"]["pareto_k"] is not None and e["btgm"]["pareto_k"] < 0.7


def test_a_minimised_criterion_is_compared_on_its_lower_tail(tiny_model, tmp_path):
    """mae-flatness-min (direction −1): level 0.999 is the lower 0.1 % quantile, reported on the criterion's own
    scale, below the bulk and agreeing with the reference."""
    r, e = _compare_one(tiny_model, tmp_path, "mae-flatness-min", 0.999, 3, 400_000)
    assert r["direction"] == -1
    lo, hi = e["btgm"]["quantile_ci"]
    assert lo <= e["btgm"]["quantile"] <= hi
    plain = compare(
        tiny_model / "models" / "vae-n10", "mae-flatness", [0.5], 1, tmp_path / "plain", tmp_path / "cache", n_reference=400_000
    )
    assert 0 < e["reference"]["quantile"] < plain["levels"]["0.5"]["reference"]["quantile"]  # far below the median
    assert_agrees_with_reference(e, 0.001, 400_000)


def test_compare_with_the_flow_proposal(tiny_model, tmp_path):
    """--proposal flows: a tuned flow with defensive components, agreeing with the reference within both noises."""
    r, e = _compare_one(tiny_model, tmp_path, "wednesday-gap", 0.99, 3, 200_000, cfg=FAST, proposal="flows")
    assert r["proposal"] == "flows"
    assert e["btgm"]["train_seconds"] > 0 and e["btgm"]["decoder_evaluations"] > 0
    assert_agrees_with_reference(e, 0.01, 200_000)
    with pytest.raises(ParameterError, match="--proposal must be flows or modes"):
        compare(tiny_model / "models" / "vae-n10", "wednesday-gap", [0.99], 1, tmp_path, tmp_path / "cache", proposal="x")
