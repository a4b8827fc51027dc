"""The public entry point: ``fl_leak.reconstruct``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from fl_leak.attacks.registry import get_attack
from fl_leak.attacks.result import Reconstruction


def reconstruct(
    model: nn.Module,
    gradients: Sequence[Tensor],
    input_shape: Sequence[int] = (3, 32, 32),
    batch_size: int = 1,
    labels: Tensor | None = None,
    attack: str = "hybrid",
    **options: Any,
) -> Reconstruction:
    """Reconstruct a client's training inputs from the gradients of its update.

    Parameters
    ----------
    model
        The network at the round's start (the weights the server sent).
    gradients
        One tensor per entry of ``model.parameters()``: the gradient of the batch-mean
        cross-entropy.
    input_shape
        Shape of one input, e.g. ``(3, 32, 32)``.
    batch_size
        Number of samples behind the gradient.
    labels
        The batch's labels if known; ``None`` recovers them from the gradients.
    attack
        ``"linear"`` (layerwise least squares), ``"hybrid"`` (plus correction by gradient
        matching), or any other registered attack.
    **options
        Passed to the attack (see each attack's docstring).

    Returns
    -------
    Reconstruction
        ``inputs`` (B, *input_shape), ``labels`` (B,), per-layer ``layers`` diagnostics.
    """
    return get_attack(attack)(
        model, gradients, tuple(input_shape), batch_size=batch_size, labels=labels, **options
    )
