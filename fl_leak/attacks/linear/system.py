"""One layer's stacked linear system ``[A ; K_D] x = [z - b ; G]`` as a matrix-free operator.

Rows are equilibrated so that both blocks weigh comparably: forward rows of output channel ``o``
are divided by ``||W_o||`` and gradient rows of output channel ``o`` by ``||D_o||`` (the norm of
that channel's output gradients over batch and positions); for rows away from padding borders this
makes every row of unit norm. Forward rows whose activation could not be inverted (clipped
``tanh``/``sigmoid`` outputs, inactive ReLU units) are masked out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator
from torch import Tensor

from fl_leak.attacks.linear.layers import WeightOperator


def _channel_norms(t: Tensor, channel_dim: int) -> Tensor:
    moved = t.movedim(channel_dim, 0).reshape(t.shape[channel_dim], -1)
    return moved.norm(dim=1)


def _safe_inverse(norms: Tensor) -> Tensor:
    return torch.where(norms > 0, 1.0 / norms.clamp_min(torch.finfo(norms.dtype).tiny), 0.0)


@dataclass
class LayerSystem:
    """The stacked system of one weight layer for a batch of ``batch`` unknown inputs."""

    operator: WeightOperator
    output_gradient: Tensor  # D: (B, *out_shape)
    observed_gradient: Tensor  # G: weight-shaped
    target: Tensor  # z - b: (B, *out_shape)
    valid: Tensor  # bool (B, *out_shape): usable forward rows
    scaled: bool = True
    forward_weight: Tensor | None = None  # extra per-row weights of the forward block
    _forward_scale: Tensor = field(init=False, repr=False)
    _gradient_scale: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        weight = self.operator.weight
        ones_w = torch.ones(weight.shape[0], dtype=weight.dtype, device=weight.device)
        ones_d = torch.ones_like(ones_w)
        forward = _safe_inverse(_channel_norms(weight, 0)) if self.scaled else ones_w
        gradient = _safe_inverse(_channel_norms(self.output_gradient, 1)) if self.scaled else ones_d
        out_rank = len(self.operator.out_shape)
        self._forward_scale = forward.reshape(1, -1, *([1] * (out_rank - 1))) * self.valid
        if self.forward_weight is not None:
            self._forward_scale = self._forward_scale * self.forward_weight
        self._gradient_scale = gradient.reshape(-1, *([1] * (weight.dim() - 1)))

    @property
    def forward_scale(self) -> Tensor:
        """Each forward row's scale, ``(B, *out_shape)`` broadcastable (0 on masked rows)."""
        return self._forward_scale

    @property
    def gradient_scale(self) -> Tensor:
        """Each gradient row's scale, broadcastable to the weight's shape."""
        return self._gradient_scale

    @property
    def batch(self) -> int:
        return int(self.output_gradient.shape[0])

    @property
    def unknown_shape(self) -> tuple[int, ...]:
        return (self.batch, *self.operator.in_shape)

    @property
    def num_unknowns(self) -> int:
        return math.prod(self.unknown_shape)

    @property
    def num_forward_rows(self) -> int:
        return math.prod(self.target.shape)

    @property
    def num_gradient_rows(self) -> int:
        return self.observed_gradient.numel()

    @property
    def forward_equations(self) -> int:
        """Forward rows that carry a constraint (valid activation inverse)."""
        return int(self.valid.sum())

    @property
    def shape(self) -> tuple[int, int]:
        return self.num_forward_rows + self.num_gradient_rows, self.num_unknowns

    def deficiency_bound(self) -> int:
        """A lower bound on the rank deficiency that needs no factorisation.

        The rank is at most the number of non-zero rows less one dependency per output channel
        whose rows are all present (``<W_o, G_o> = sum_b <d_bo, z_bo>``), and at most the number
        of unknowns that some row touches.
        """
        active = _channel_norms(self.output_gradient, 1) > 0
        per_channel = self.num_gradient_rows // self.operator.out_channels
        gradient_rows = int(active.sum()) * per_channel
        all_valid = self.valid.movedim(1, 0).reshape(self.operator.out_channels, -1).all(dim=1)
        dependencies = int((all_valid & active).sum()) if gradient_rows else 0
        rank_bound = self.forward_equations + gradient_rows - dependencies
        magnitude = self.operator.with_weight(self.operator.weight.abs())
        touched = magnitude.forward_adjoint(self.valid.to(self.target.dtype)) + (
            magnitude.gradient_adjoint(
                torch.ones_like(self.observed_gradient), self.output_gradient.abs()
            )
        )
        untouched = int((touched == 0).sum())
        return max(self.num_unknowns - rank_bound, untouched, 0)

    def apply(self, x: Tensor) -> Tensor:
        """``U x`` for an unknown ``x`` of ``unknown_shape``, flattened."""
        forward = self._forward_scale * self.operator.forward(x)
        gradient = self._gradient_scale * self.operator.gradient(x, self.output_gradient)
        return torch.cat([forward.reshape(-1), gradient.reshape(-1)])

    def apply_adjoint(self, y: Tensor) -> Tensor:
        """``U^T y`` for a flat ``y``, shaped as the unknown."""
        split = self.num_forward_rows
        forward = y[:split].reshape(self.target.shape) * self._forward_scale
        gradient = y[split:].reshape(self.observed_gradient.shape) * self._gradient_scale
        return self.operator.forward_adjoint(forward) + self.operator.gradient_adjoint(
            gradient, self.output_gradient
        )

    def rhs(self) -> Tensor:
        """The right-hand side ``V``, scaled like the rows."""
        forward = self._forward_scale * self.target
        gradient = self._gradient_scale * self.observed_gradient
        return torch.cat([forward.reshape(-1), gradient.reshape(-1)])

    def relative_residual(self, x: Tensor) -> float:
        """``||U x - V|| / ||V||``."""
        rhs = self.rhs()
        return float((self.apply(x) - rhs).norm() / rhs.norm().clamp_min(1e-300))

    def as_scipy(self) -> LinearOperator:
        """The system as a float64 ``scipy.sparse.linalg.LinearOperator`` (host memory)."""
        template = self.target

        def to_torch(v: np.ndarray) -> Tensor:
            return torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64).ravel()).to(
                device=template.device, dtype=template.dtype
            )

        def matvec(v: np.ndarray) -> np.ndarray:
            x = to_torch(v).reshape(self.unknown_shape)
            return self.apply(x).detach().cpu().double().numpy()

        def rmatvec(v: np.ndarray) -> np.ndarray:
            return self.apply_adjoint(to_torch(v)).reshape(-1).detach().cpu().double().numpy()

        return LinearOperator(self.shape, matvec=matvec, rmatvec=rmatvec, dtype=np.float64)

    def dense(self, chunk: int = 512) -> Tensor:
        """The materialised matrix ``U`` (rows as scaled), built block by block.

        Built from ``U e_j`` column by column, or from ``U^T e_i`` row by row when there are
        fewer rows than unknowns.
        """
        rows, columns = self.shape
        dtype, device = self.target.dtype, self.target.device
        if rows < columns:
            adjoint = torch.func.vmap(lambda e: self.apply_adjoint(e).reshape(-1))
            eye = torch.eye(rows, dtype=dtype, device=device)
            return torch.cat([adjoint(eye[i : i + chunk]) for i in range(0, rows, chunk)])
        forward = torch.func.vmap(lambda e: self.apply(e.reshape(self.unknown_shape)))
        eye = torch.eye(columns, dtype=dtype, device=device)
        return torch.cat(
            [forward(eye[j : j + chunk]) for j in range(0, columns, chunk)]
        ).T.contiguous()
