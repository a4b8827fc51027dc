"""2-D max pooling: a fixed selection once the positions of the window maxima are known.

It becomes the output stage of the block before it (``x_{l+1} = pool(s(z_l))``; pooling and a
monotone activation commute, so it may stand on either side of the activation). Given the
positions, the block's forward rows are those of ``z`` at the selected entries and its output
gradient is the pooled one scattered to them; the walk estimates the positions
(:mod:`fl_leak.attacks.linear.pooling`), the audit reads them from its probe.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fl_leak.attacks.linear.layers.base import Selection, Shape
from fl_leak.attacks.linear.layers.registry import register_selection
from fl_leak.errors import UnsupportedLayerError


class MaxPool2dSelection(Selection):
    """``nn.MaxPool2d`` (any kernel, stride, padding, dilation, ceil mode) as a selection."""

    def __init__(self, module: nn.MaxPool2d, in_shape: Shape) -> None:
        if module.return_indices:
            raise UnsupportedLayerError("", module, "return_indices=True")
        if len(in_shape) != 3:
            raise UnsupportedLayerError("", module, f"input of shape {in_shape}, not (C, H, W)")
        self.module = module
        super().__init__(in_shape, tuple(module(torch.zeros(1, *in_shape)).shape[1:]))

    def apply(self, y: Tensor) -> Tensor:
        return self.module(y)

    def positions(self, z: Tensor) -> Tensor:
        m = self.module
        pooled = F.max_pool2d(
            z, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, return_indices=True
        )
        return pooled[1]


@register_selection(nn.MaxPool2d)
def _maxpool2d(module: nn.Module, in_shape: Shape) -> Selection:
    assert isinstance(module, nn.MaxPool2d)
    return MaxPool2dSelection(module, in_shape)
