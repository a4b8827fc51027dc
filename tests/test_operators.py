"""Every layer adapter against independent computation: adjoint identity and autograd."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fl_leak.attacks.linear.layers import Folded, linear_map_for, weight_operator_for


@pytest.fixture(autouse=True)
def float64_default():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


CASES = [
    ("linear", lambda: nn.Linear(20, 7), (20,)),
    ("conv s1 p0", lambda: nn.Conv2d(3, 4, 3, bias=False), (3, 9, 9)),
    ("conv s2 p1 bias", lambda: nn.Conv2d(3, 5, 3, stride=2, padding=1), (3, 10, 10)),
    ("conv s2 k4 p2", lambda: nn.Conv2d(2, 3, 4, stride=2, padding=2, bias=False), (2, 11, 11)),
    (
        "conv dilated grouped",
        lambda: nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2),
        (4, 8, 8),
    ),
]
MAPS = [
    ("flatten", lambda: nn.Flatten(), (3, 4, 4)),
    ("avgpool 2", lambda: nn.AvgPool2d(2), (3, 6, 6)),
    ("avgpool 3 s2 p1", lambda: nn.AvgPool2d(3, stride=2, padding=1), (2, 7, 7)),
]


def _operator(factory, in_shape, batch=3):
    torch.manual_seed(0)
    module = factory().double()
    bias = module.bias.detach() if module.bias is not None else None
    operator = weight_operator_for(module, in_shape, module.weight.detach(), bias)
    x = torch.randn(batch, *in_shape)
    d = torch.randn(batch, *operator.out_shape)
    return module, operator, x, d


@pytest.mark.parametrize("name,factory,in_shape", CASES, ids=[c[0] for c in CASES])
def test_forward_adjoint_identity(name, factory, in_shape):
    _, operator, x, d = _operator(factory, in_shape)
    lhs = (operator.forward(x) * d).sum()
    rhs = (x * operator.forward_adjoint(d)).sum()
    assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs))


@pytest.mark.parametrize("name,factory,in_shape", CASES, ids=[c[0] for c in CASES])
def test_gradient_adjoint_identity(name, factory, in_shape):
    _, operator, x, d = _operator(factory, in_shape)
    g = torch.randn_like(operator.weight)
    lhs = (operator.gradient(x, d) * g).sum()
    rhs = (x * operator.gradient_adjoint(g, d)).sum()
    assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs))


@pytest.mark.parametrize("name,factory,in_shape", CASES, ids=[c[0] for c in CASES])
def test_operators_match_autograd(name, factory, in_shape):
    module, operator, x, d = _operator(factory, in_shape)
    output = module(x)
    # forward map: the module's output less its bias
    assert torch.allclose(operator.add_bias(operator.forward(x)), output, atol=1e-12)
    # gradient map: autograd's weight gradient of <module(x), d>, summed over the batch
    (weight_grad,) = torch.autograd.grad((output * d).sum(), [module.weight])
    assert torch.allclose(operator.gradient(x, d), weight_grad, atol=1e-12)


@pytest.mark.parametrize("name,factory,in_shape", MAPS, ids=[m[0] for m in MAPS])
def test_linear_maps_adjoint_and_module(name, factory, in_shape):
    module = factory()
    linear_map = linear_map_for(module, in_shape)
    x = torch.randn(2, *in_shape)
    y = torch.randn(2, *linear_map.out_shape)
    assert torch.allclose(linear_map.apply(x), module(x))
    lhs, rhs = (linear_map.apply(x) * y).sum(), (x * linear_map.adjoint(y)).sum()
    assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs))


def test_folded_operator_is_the_composition():
    torch.manual_seed(1)
    pool, flat, fc = nn.AvgPool2d(2), nn.Flatten(), nn.Linear(3 * 3 * 3, 5).double()
    maps = [linear_map_for(pool, (3, 6, 6)), linear_map_for(flat, (3, 3, 3))]
    core = weight_operator_for(fc, (27,), fc.weight.detach(), fc.bias.detach())
    folded = Folded(maps, core)
    x = torch.randn(4, 3, 6, 6)
    d = torch.randn(4, 5)
    assert torch.allclose(folded.add_bias(folded.forward(x)), fc(flat(pool(x))))
    lhs = (folded.forward(x) * d).sum()
    assert abs(lhs - (x * folded.forward_adjoint(d)).sum()) < 1e-10
    g = torch.randn(5, 27)
    assert (
        abs((folded.gradient(x, d) * g).sum() - (x * folded.gradient_adjoint(g, d)).sum()) < 1e-10
    )
    (weight_grad,) = torch.autograd.grad((fc(flat(pool(x))) * d).sum(), [fc.weight])
    assert torch.allclose(folded.gradient(x, d), weight_grad)


def test_conv_with_padding_mode_other_than_zeros_is_refused():
    from fl_leak.errors import UnsupportedLayerError

    module = nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular")
    with pytest.raises(UnsupportedLayerError, match="padding_mode"):
        weight_operator_for(module, (1, 5, 5), module.weight.detach(), None)


def test_forward_of_conv_matches_functional_with_stride():
    module, operator, x, _ = _operator(CASES[2][1], CASES[2][2])
    assert torch.allclose(
        operator.forward(x), F.conv2d(x, module.weight, None, stride=2, padding=1)
    )
