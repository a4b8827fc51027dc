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

    def forward_gram(self, squared_scale: Tensor) -> Tensor | None:
        """``A_1^T diag(s) A_1`` without a sparse product (grouped convolutions: None).

        Entry ``((c, p), (c', p'))`` sums ``s[o, y] W[o, c, i] W[o, c', k]`` over filters ``o``
        and output positions ``y`` whose window puts kernel offset ``i`` on input position ``p``
        and ``k`` on ``p'``. For one pair of offsets those entries lie on a strided diagonal of
        the matrix, one per output position whose two taps both fall inside the input: one
        product over the filters, added onto a strided view."""
        if self.groups != 1:
            return None
        channels, height, width = self.in_shape
        out_h, out_w = self.out_shape[1:]
        weight = self.weight.detach().double()
        filters, _, kernel_h, kernel_w = weight.shape
        gram = weight.new_zeros(channels, height, width, channels, height, width)
        c_stride, y_stride, x_stride, c2_stride, y2_stride, x2_stride = gram.stride()
        rows = _taps(kernel_h, out_h, height, self.stride[0], self.padding[0], self.dilation[0])
        columns = _taps(kernel_w, out_w, width, self.stride[1], self.padding[1], self.dilation[1])
        second = weight.reshape(filters, channels, kernel_h * kernel_w)
        scale = squared_scale.double().reshape(filters, 1, out_h, out_w)
        kernel = [(i, j) for i in range(kernel_h) for j in range(kernel_w)]
        for i, j in kernel:
            scaled = weight[:, :, i, j].reshape(filters, channels, 1, 1) * scale
            terms = torch.einsum("ocyx,odm->mcyxd", scaled, second)
            for m, (k, ell) in enumerate(kernel):
                (y0, y1, top, top2), (x0, x1, left, left2) = rows[i, k], columns[j, ell]
                if y1 <= y0 or x1 <= x0:
                    continue
                view = gram.as_strided(
                    (channels, y1 - y0, x1 - x0, channels),
                    (
                        c_stride,
                        self.stride[0] * (y_stride + y2_stride),
                        self.stride[1] * (x_stride + x2_stride),
                        c2_stride,
                    ),
                    top * y_stride + top2 * y2_stride + left * x_stride + left2 * x2_stride,
                )
                view += terms[m, :, y0:y1, x0:x1]
        size = channels * height * width
        return gram.reshape(size, size)

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


def _taps(
    kernel: int, outputs: int, size: int, stride: int, padding: int, dilation: int
) -> dict[tuple[int, int], tuple[int, int, int, int]]:
    """For each pair of kernel offsets ``(i, k)`` along one axis: the output positions
    ``y0 <= y < y1`` whose taps ``stride y + dilation i - padding`` and ``... k ...`` both lie in
    ``[0, size)``, and those taps at ``y0``."""
    taps = {}
    for i in range(kernel):
        for k in range(kernel):
            low = max(padding - dilation * min(i, k), 0)
            high = size + padding - dilation * max(i, k)  # tap < size for both
            y0 = -(-low // stride)
            y1 = min(outputs, -(-high // stride))
            taps[i, k] = (
                y0,
                y1,
                stride * y0 + dilation * i - padding,
                stride * y0 + dilation * k - padding,
            )
    return taps
