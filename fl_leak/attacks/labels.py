"""Labels from the last layer's bias gradient.

For the batch-mean cross-entropy, the last layer's output gradient of sample ``b`` is
``s'(z_b) * (softmax - onehot(y_b)) / B``; with a final activation whose derivative is positive
(identity, tanh, sigmoid), the only negative entry of a single sample's gradient is its label.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fl_leak.errors import FlLeakError


def recover_labels(bias_gradient: Tensor, batch_size: int) -> Tensor:
    """Labels of a batch from the last layer's bias gradient ``g = sum_b d_b``.

    For ``batch_size == 1`` the label is the index of the most negative entry of ``g``.
    """
    if batch_size != 1:
        raise FlLeakError("label recovery for batch_size > 1 is not available yet; pass labels=")
    return torch.argmin(bias_gradient).reshape(1).to(torch.long)
