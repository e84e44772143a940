"""LatentFlow reaches into zuko's internals; this fails loudly, naming what moved, when a zuko release moves them.

pyproject.toml bounds zuko from above; before raising the bound, run this file against the new release.
"""

import importlib.metadata

import pytest
import torch
from torch import nn

from energy_btgm.core.flow import LatentFlow, log_normal


def test_zuko_internals_that_latent_flow_uses_are_where_it_expects():
    import zuko

    version = importlib.metadata.version("zuko")
    maf = zuko.flows.MAF(3, transforms=2, hidden_features=[8, 8], passes=2)
    where = f"zuko {version}: LatentFlow (energy_btgm/core/flow.py) expects"
    assert hasattr(maf, "transform") and hasattr(maf.transform, "transforms"), f"{where} MAF.transform.transforms (a list)"
    for t in maf.transform.transforms:
        assert hasattr(t, "hyper") and isinstance(t.hyper[-1], nn.Linear), (
            f"{where} each autoregressive transform's conditioner at .hyper, ending in nn.Linear"
        )
    tr = maf.transform()
    assert callable(getattr(tr, "call_and_ladj", None)), f"{where} MAF.transform() to have call_and_ladj"
    assert callable(getattr(tr.inv, "call_and_ladj", None)), f"{where} MAF.transform().inv to have call_and_ladj"


def test_flow_starts_as_the_identity_and_its_inverse_density_is_exact():
    torch.manual_seed(0)
    flow = LatentFlow(4, transforms=2, hidden=16, passes=2)
    zhat = torch.randn(16, 4)
    z, ladj = flow(zhat)
    assert torch.allclose(z, zhat, atol=1e-6) and torch.allclose(ladj, torch.zeros(16), atol=1e-6)
    for p in flow.parameters():  # away from the identity: log_prob through the inverse matches the forward pass
        p.data.normal_(0, 0.1)
    z, log_q, log_p = flow.sample(64, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(flow.log_prob(z), log_q, atol=1e-4)
    assert torch.allclose(log_p, log_normal(z))


def test_a_wider_base_gives_the_exact_density_of_the_wider_flow():
    flow = LatentFlow(2, transforms=1, hidden=8)  # identity: with spread s, q = N(0, s² I)
    z, log_q, _ = flow.sample(100, generator=torch.Generator().manual_seed(0), spread=2.0)
    exact = torch.distributions.Normal(0.0, 2.0).log_prob(z).sum(-1)
    assert torch.allclose(log_q, exact, atol=1e-5)


def test_flow_logdet_matches_autograd_jacobian():
    torch.manual_seed(0)
    flow = LatentFlow(4, transforms=2, hidden=16)
    for p in flow.parameters():
        p.data.normal_(0, 0.1)
    x = torch.randn(4)
    J = torch.autograd.functional.jacobian(lambda v: flow(v[None])[0][0], x)
    _, ladj = flow(x[None])
    assert float(ladj.detach()) == pytest.approx(float(torch.linalg.slogdet(J)[1]), abs=1e-4)


@pytest.mark.parametrize("shape", [(5, 3), (2, 5, 3)])
def test_log_normal_is_the_standard_normal_density(shape):
    z = torch.randn(*shape)
    assert torch.allclose(log_normal(z), torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1), atol=1e-5)
