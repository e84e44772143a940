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


def test_user_criterion_by_import_path_and_rejections():
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
