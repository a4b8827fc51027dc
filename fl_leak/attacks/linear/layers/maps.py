"""Parameter-free linear layers that fold into the next weight layer: flatten, average pooling."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fl_leak.attacks.linear.layers.base import LinearMap, Shape
from fl_leak.attacks.linear.layers.registry import register_linear_map


class Reshape(LinearMap):
    """Flatten (or any reshape): its adjoint is the inverse reshape."""

    commutes_with_activations = True

    def apply(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], *self.out_shape)

    def adjoint(self, y: Tensor) -> Tensor:
        return y.reshape(y.shape[0], *self.in_shape)


class AvgPool2d(LinearMap):
    """Average pooling; the adjoint is the vector-Jacobian product of this linear map."""

    def __init__(self, module: nn.AvgPool2d, in_shape: Shape) -> None:
        self.module = module
        out = module(torch.zeros(1, *in_shape))
        super().__init__(in_shape, tuple(out.shape[1:]))

    def apply(self, x: Tensor) -> Tensor:
        return self.module(x)

    def adjoint(self, y: Tensor) -> Tensor:
        probe = y.new_zeros(y.shape[0], *self.in_shape)
        pullback = torch.func.vjp(self.module, probe)[1]
        return pullback(y)[0]


@register_linear_map(nn.Flatten)
def _flatten(module: nn.Module, in_shape: Shape) -> LinearMap:
    assert isinstance(module, nn.Flatten)
    out = module(torch.zeros(1, *in_shape))
    return Reshape(in_shape, tuple(out.shape[1:]))


@register_linear_map(nn.AvgPool2d)
def _avgpool(module: nn.Module, in_shape: Shape) -> LinearMap:
    assert isinstance(module, nn.AvgPool2d)
    return AvgPool2d(module, in_shape)


__all__ = ["AvgPool2d", "Reshape"]
