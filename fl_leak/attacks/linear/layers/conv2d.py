"""2-D convolution with any stride, zero padding, dilation and groups; bias on or off."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.grad import conv2d_input, conv2d_weight

from fl_leak.attacks.linear.layers.base import Shape, WeightOperator
from fl_leak.attacks.linear.layers.registry import register_weight_layer
from fl_leak.errors import UnsupportedLayerError


class Conv2dOperator(WeightOperator):
    """``A x = conv2d(x, W)``; ``K_D(x)`` is conv2d's weight gradient, its adjoint the input one."""

    def __init__(self, module: nn.Conv2d, in_shape: Shape, weight: Tensor, bias: Tensor | None):
        if module.padding_mode != "zeros":
            raise UnsupportedLayerError("", module, f"padding_mode={module.padding_mode!r}")
        if isinstance(module.padding, str):
            raise UnsupportedLayerError(
                "", module, f"padding={module.padding!r}; give it in pixels"
            )
        self.stride = module.stride
        self.padding = module.padding
        self.dilation = module.dilation
        self.groups = module.groups
        out = F.conv2d(weight.new_zeros(1, *in_shape), weight, None, **self._options())
        super().__init__(in_shape, tuple(out.shape[1:]), weight, bias)

    def _options(self) -> dict[str, Any]:
        return {
            "stride": self.stride,
            "padding": self.padding,
            "dilation": self.dilation,
            "groups": self.groups,
        }

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, None, **self._options())

    def forward_adjoint(self, z: Tensor) -> Tensor:
        return conv2d_input((z.shape[0], *self.in_shape), self.weight, z, **self._options())

    def gradient(self, x: Tensor, d: Tensor) -> Tensor:
        return conv2d_weight(x, self.weight.shape, d, **self._options())

    def gradient_adjoint(self, g: Tensor, d: Tensor) -> Tensor:
        return conv2d_input((d.shape[0], *self.in_shape), g, d, **self._options())

    def patch_index(self) -> Tensor | None:
        """``unfold`` of the input's flat positions (grouped convolutions: None)."""
        if self.groups != 1:
            return None
        positions = torch.arange(1, math.prod(self.in_shape) + 1, dtype=torch.float64)
        patches = F.unfold(
            positions.reshape(1, *self.in_shape),
            self.weight.shape[2:],
            dilation=self.dilation,
            padding=self.padding,
            stride=self.stride,
        )
        return patches[0].round().long() - 1

    def padding_entries(self) -> int:
        """The zero border: ``C * ((H + 2 p_h) (W + 2 p_w) - H W)``."""
        channels, height, width = self.in_shape
        pad_h, pad_w = self.padding
        return channels * ((height + 2 * pad_h) * (width + 2 * pad_w) - height * width)


@register_weight_layer(nn.Conv2d)
def _conv2d(
    module: nn.Module, in_shape: Shape, weight: Tensor, bias: Tensor | None
) -> WeightOperator:
    assert isinstance(module, nn.Conv2d)
    return Conv2dOperator(module, in_shape, weight, bias)
