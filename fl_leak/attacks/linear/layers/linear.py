"""Fully connected layer: ``z = W x + b`` with ``x`` flat."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fl_leak.attacks.linear.layers.base import Shape, WeightOperator
from fl_leak.attacks.linear.layers.registry import register_weight_layer


class FullyConnectedOperator(WeightOperator):
    """``A x = W x``; ``K_D(X) = D^T X`` summed over the batch."""

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.weight.T

    def forward_adjoint(self, z: Tensor) -> Tensor:
        return z @ self.weight

    def gradient(self, x: Tensor, d: Tensor) -> Tensor:
        return d.T @ x

    def gradient_adjoint(self, g: Tensor, d: Tensor) -> Tensor:
        return d @ g

    def forward_gram(self, squared_scale: Tensor) -> Tensor:
        """``W^T diag(s) W``."""
        weight = self.weight.detach().double()
        return (weight * squared_scale.double().reshape(-1, 1)).T @ weight

    def patch_index(self) -> Tensor:
        """Every weight column meets its input entry at the one output position."""
        return torch.arange(int(self.weight.shape[1]), device=self.weight.device).reshape(-1, 1)


@register_weight_layer(nn.Linear)
def _linear(
    module: nn.Module, in_shape: Shape, weight: Tensor, bias: Tensor | None
) -> WeightOperator:
    return FullyConnectedOperator(in_shape, (int(weight.shape[0]),), weight, bias)
