"""The input of the last (fully connected) layer, from its weight and bias gradients.

With one sample, every row ``j`` of ``G = d x^T`` is ``d_j x^T`` and ``g = d``, so the
least-squares estimate from all rows is ``x = G^T g / (g . g)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from fl_leak.errors import FlLeakError


@dataclass
class LastLayerSolution:
    """Inputs ``X`` (B, n) of the last layer, its output gradients ``D`` (B, m), residual."""

    inputs: Tensor
    output_gradients: Tensor
    residual: float


def solve_last_layer(
    weight_gradient: Tensor, bias_gradient: Tensor, batch_size: int
) -> LastLayerSolution:
    """Recover the last layer's inputs and output gradients from ``G`` and ``g``."""
    if batch_size != 1:
        raise FlLeakError("the linear attack handles batch_size=1 only for now")
    energy = bias_gradient @ bias_gradient
    if energy <= 0:
        raise FlLeakError(
            "the last layer's bias gradient is zero: the update carries no signal to invert "
            "(loss at its minimum, or the gradient was zeroed by a defense)"
        )
    x = (weight_gradient.T @ bias_gradient) / energy
    residual = torch.linalg.norm(
        weight_gradient - torch.outer(bias_gradient, x)
    ) / torch.linalg.norm(weight_gradient).clamp_min(1e-300)
    return LastLayerSolution(x.reshape(1, -1), bias_gradient.reshape(1, -1), float(residual))
