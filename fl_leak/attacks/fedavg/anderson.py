"""Anderson acceleration of a fixed-point iteration ``x = F(x)`` (Walker & Ni, 2011, type II).

From the last ``memory`` iterates it extrapolates where the residual ``F(x) - x`` vanishes; with
``memory`` 0 it is the damped iteration ``x + mixing * (F(x) - x)``.
"""

from __future__ import annotations

import torch
from torch import Tensor


class Anderson:
    """Proposes the next iterate from the current one and its image ``F(x)``."""

    def __init__(self, memory: int, mixing: float) -> None:
        self.memory, self.mixing = memory, mixing
        self.steps: list[Tensor] = []  # differences of successive iterates
        self.changes: list[Tensor] = []  # differences of successive residuals
        self.last: tuple[Tensor, Tensor] | None = None

    def step(self, x: Tensor, image: Tensor) -> Tensor:
        """The next iterate after ``x``, whose image under the map is ``image``."""
        point, residual = x.flatten(), (image - x).flatten()
        proposal = point + self.mixing * residual
        if self.memory == 0:
            return proposal.reshape(x.shape)
        if self.last is not None:
            self.steps.append(point - self.last[0])
            self.changes.append(residual - self.last[1])
            del self.steps[: -self.memory], self.changes[: -self.memory]
        self.last = (point, residual)
        if not self.steps:
            return proposal.reshape(x.shape)
        changes = torch.stack(self.changes, dim=1)
        steps = torch.stack(self.steps, dim=1)
        gamma = torch.linalg.lstsq(changes, residual.unsqueeze(1)).solution.squeeze(1)
        return (proposal - (steps + self.mixing * changes) @ gamma).reshape(x.shape)
