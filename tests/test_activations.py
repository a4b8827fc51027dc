"""Activation adapters: forward agrees with torch, inverse undoes it, derivative is autograd's."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fl_leak.attacks.linear.activations import activation_for

MODULES = [
    nn.Identity(),
    nn.Tanh(),
    nn.Sigmoid(),
    nn.LeakyReLU(),
    nn.LeakyReLU(0.2),
    nn.ReLU(),
    nn.Softplus(),
    nn.Softplus(beta=2.0, threshold=5.0),
]


@pytest.mark.parametrize("module", MODULES, ids=[repr(m) for m in MODULES])
def test_forward_inverse_derivative(module):
    torch.manual_seed(0)
    adapter = activation_for(module)
    z = (torch.randn(500, dtype=torch.float64) * 3).requires_grad_(True)
    y = module(z)
    assert torch.allclose(adapter.forward(z), y)
    (autograd_derivative,) = torch.autograd.grad(y.sum(), [z])
    assert torch.allclose(adapter.derivative(y.detach()), autograd_derivative, atol=1e-12)
    inversion = adapter.inverse(y.detach())
    valid = inversion.valid
    assert torch.allclose(inversion.pre_activation[valid], z.detach()[valid], atol=1e-8)
    if isinstance(module, nn.ReLU):
        assert torch.equal(valid, z.detach() > 0)
    else:
        assert valid.all()


@pytest.mark.parametrize(
    "module,edge", [(nn.Tanh(), 1.0), (nn.Sigmoid(), 1.0), (nn.Sigmoid(), 0.0)]
)
def test_outputs_at_the_domain_edge_are_clipped_and_reported(module, edge):
    adapter = activation_for(module)
    y = torch.tensor([0.5 * edge + 0.25, edge, edge], dtype=torch.float64)
    inversion = adapter.inverse(y)
    assert inversion.clipped == 2
    assert inversion.valid.tolist() == [True, False, False]
    assert torch.isfinite(inversion.pre_activation).all()


def test_unsupported_module_has_no_adapter():
    assert activation_for(nn.BatchNorm2d(3)) is None
