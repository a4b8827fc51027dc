"""From a client's update to the gradient the attack needs.

Under FedSGD (one step of plain SGD with learning rate ``lr``) the update is exactly
``w_returned = w_sent - lr * g``, so ``g = (w_sent - w_returned) / lr``. Under FedAvg with ``S``
local steps ``(w_sent - w_returned) / (lr * S)`` is the mean of the gradients along the local
trajectory, an estimate of the first step's gradient that degrades as ``S`` grows. Differences are
taken in float64; the precision left is that of the weights (float32 loses digits to cancellation).
"""

from __future__ import annotations

from flwr.app import ArrayRecord
from torch import Tensor, nn

from fl_leak.attacks.fedavg.schedule import relative_distance


def gradient_estimate(
    model: nn.Module, sent: ArrayRecord, returned: ArrayRecord, lr: float, steps: int
) -> list[Tensor]:
    """``(w_sent - w_returned) / (lr * steps)`` per entry of ``model.parameters()``, in float64."""
    before, after = sent.to_torch_state_dict(), returned.to_torch_state_dict()
    names = [name for name, _ in model.named_parameters()]
    missing = [name for name in names if name not in after]
    if missing:
        raise ValueError(f"the update lacks parameters {missing}")
    scale = lr * steps
    return [(before[name].double() - after[name].double()) / scale for name in names]


def relative_error(estimate: list[Tensor], truth: list[Tensor]) -> float:
    """``||estimate - truth|| / ||truth||`` over all tensors together, in float64."""
    return relative_distance([e.double() for e in estimate], [t.double() for t in truth])
