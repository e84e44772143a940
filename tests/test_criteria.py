import math

import pytest
import torch

import criteria


@pytest.mark.parametrize("name", list(criteria.REGISTRY))
@pytest.mark.parametrize("T", [168, 336, 672])
def test_contract_shapes_finite_gradients(name, T):
    c = criteria.get(name)
    criteria.check(c, T=T)
    x = torch.rand(3, 5, T) + 0.1
    assert c(x).shape == (3, 5)
    assert c.direction in (+1, -1) and c.unit in ("kW", "kWh") and c.doc


def test_values_on_known_curves():
    T = 336
    x = torch.ones(1, T)
    x[0, 2 * 48 : 3 * 48] = 3.0  # Wednesday at 3 kW, else 1 kW
    assert criteria.get("weekly-energy")(x).item() == pytest.approx(0.5 * (288 * 1 + 48 * 3))
    assert criteria.get("wednesday-mean")(x).item() == pytest.approx(3.0)
    assert criteria.get("wednesday-gap")(x).item() == pytest.approx(3.0 - (288 + 144) / 336)
    mean = (288 + 144) / 336
    assert criteria.get("mae-flatness")(x).item() == pytest.approx(0.5 * (288 * (mean - 1) + 48 * (3 - mean)), rel=1e-5)
    assert criteria.get("weekly-peak")(x).item() == 3.0


def test_smooth_peak_bounds_hard_peak():
    x = torch.rand(8, 336) * 4
    hard = criteria.weekly_peak(x)
    soft = criteria.weekly_peak(x, smooth=0.25)
    assert (soft >= hard).all() and (soft <= hard + 0.25 * math.log(336)).all()


def test_minimise_flips_sign_for_training():
    x = torch.rand(2, 336)
    assert torch.allclose(criteria.get("mae-flatness-min").train(x), -criteria.mae_flatness(x))


def test_user_criterion_by_import_path_and_rejections(monkeypatch):
    monkeypatch.setenv(criteria.ALLOW_ENV, "criteria, no_such_module_xyz")
    c = criteria.get("criteria:weekly_energy")
    assert c.name == "criteria:weekly_energy"
    with pytest.raises(KeyError, match="unknown criterion 'nope'"):
        criteria.get("nope")
    with pytest.raises(KeyError, match="cannot import"):
        criteria.get("no_such_module_xyz:f")
    bad_shape = criteria.Criterion("bad", lambda x: x, "kW", 1, "d")
    with pytest.raises(ValueError, match="must map curves"):
        criteria.check(bad_shape)
    nan = criteria.Criterion("nan", lambda x: x.sum(-1) * float("nan"), "kW", 1, "d")
    with pytest.raises(ValueError, match="NaN or inf"):
        criteria.check(nan)
    flat = criteria.Criterion("flat", lambda x: x.sum(-1).detach().round(), "kW", 1, "d")
    with pytest.raises(ValueError, match="no usable gradient"):
        criteria.check(flat)


def test_a_user_criterion_outside_the_allow_list_is_refused_before_import(monkeypatch, tmp_path):
    """Importing runs a module's code: only modules the operator allows are imported, and text is never evaluated."""
    import sys

    marker = tmp_path / "ran"
    (tmp_path / "planted_mod.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef f(x):\n    return x.sum(-1)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(criteria.ALLOW_ENV, raising=False)
    for name in ("planted_mod:f", "os:system", "criteria:weekly_energy"):
        with pytest.raises(KeyError, match="not on the allow-list"):
            criteria.get(name)
    for text in ("__import__('os').system('true')", "planted_mod:f; import os", "planted_mod:f()"):
        with pytest.raises(KeyError):
            criteria.get(text)
    assert not marker.exists() and "planted_mod" not in sys.modules
    monkeypatch.setenv(criteria.ALLOW_ENV, "planted_mod")
    assert criteria.get("planted_mod:f")(torch.ones(2, 336)).tolist() == [336.0, 336.0] and marker.exists()
    monkeypatch.setenv(criteria.ALLOW_ENV, "planted")  # a prefix of the name is not its package
    with pytest.raises(KeyError, match="not on the allow-list"):
        criteria.get("planted_mod:f")
