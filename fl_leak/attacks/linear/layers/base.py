"""The two kinds of layer adapters the linear attack is built from.

A *weight operator* describes one weight layer ``z = A x + b`` for a batch ``x`` of shape
``(B, *in_shape)``: the forward map ``x -> A x``, the gradient map ``x -> K_D(x)`` (the weight
gradient that inputs ``x`` would produce with output gradients ``D``, summed over the batch), and
the adjoints of both. A *linear map* is a parameter-free linear layer (flatten, average pooling)
that is folded into the weight layer after it. A *selection* is a parameter-free layer that is
linear once data-dependent positions are known (max pooling: the positions of the maxima); it
becomes the output stage of the block before it. A *channel affine* is a layer that, as it is
evaluated, scales and shifts each channel by constants (batch normalisation in evaluation mode);
it is folded into the weight layer before it.

An adapter module defines its operator (or map) and registers a factory for its module type with
:func:`~fl_leak.attacks.linear.layers.registry.register_weight_layer` (or ``register_linear_map``);
what the audit reports about a layer type (its padding) is a method of the operator.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

from torch import Tensor

Shape = tuple[int, ...]


class LinearMap(ABC):
    """A parameter-free linear layer: ``apply`` and its exact ``adjoint``, batch first."""

    # True for maps that only move entries (flatten, reshape): they commute with an element-wise
    # activation, so they may stand between a weight layer and its activation
    commutes_with_activations: ClassVar[bool] = False

    def __init__(self, in_shape: Shape, out_shape: Shape) -> None:
        self.in_shape = in_shape
        self.out_shape = out_shape

    @abstractmethod
    def apply(self, x: Tensor) -> Tensor:
        """Map ``(B, *in_shape)`` to ``(B, *out_shape)``."""

    @abstractmethod
    def adjoint(self, y: Tensor) -> Tensor:
        """Map ``(B, *out_shape)`` back to ``(B, *in_shape)``: the transpose of ``apply``."""


class WeightOperator(ABC):
    """One weight layer's forward and gradient maps, for a fixed weight."""

    def __init__(self, in_shape: Shape, out_shape: Shape, weight: Tensor, bias: Tensor | None):
        self.in_shape = in_shape
        self.out_shape = out_shape
        self.weight = weight
        self.bias = bias

    @property
    def out_channels(self) -> int:
        """Number of output channels (rows of a Linear weight, filters of a convolution)."""
        return int(self.weight.shape[0])

    @abstractmethod
    def forward(self, x: Tensor) -> Tensor:
        """``A x`` without the bias: ``(B, *in_shape) -> (B, *out_shape)``."""

    @abstractmethod
    def forward_adjoint(self, z: Tensor) -> Tensor:
        """``A^T z``: ``(B, *out_shape) -> (B, *in_shape)``."""

    @abstractmethod
    def gradient(self, x: Tensor, d: Tensor) -> Tensor:
        """``K_D(x) = sum_b dL/dW`` for inputs ``x`` and output gradients ``d`` (weight-shaped)."""

    @abstractmethod
    def gradient_adjoint(self, g: Tensor, d: Tensor) -> Tensor:
        """``K_D^T g``: a weight-shaped ``g`` back to ``(B, *in_shape)``."""

    def with_weight(self, weight: Tensor) -> WeightOperator:
        """The same operator with another weight of the same shape (bias kept)."""
        clone = copy.copy(self)
        clone.weight = weight
        return clone

    def with_bias(self, bias: Tensor | None) -> WeightOperator:
        """The same operator with another bias (weight kept)."""
        clone = copy.copy(self)
        clone.bias = bias
        return clone

    def add_bias(self, z: Tensor) -> Tensor:
        """``z + b`` broadcast over the output's spatial dimensions."""
        if self.bias is None:
            return z
        return z + self.bias.reshape(self.out_channels, *([1] * (len(self.out_shape) - 1)))

    def padding_entries(self) -> int:
        """Zero entries per sample that a padded-input formulation of the layer adds as unknowns
        (R-GAP's counting; the audit reports them). None for a layer without padding."""
        return 0

    def forward_gram(self, squared_scale: Tensor) -> Tensor | None:
        """``A_1^T diag(s) A_1`` for one sample, dense float64 ``(n_in, n_in)``, with ``s``
        (``out_shape``) the squared row scales: the column Gram matrix of the layer's forward
        rows, which the audit otherwise forms as a sparse product. None (the default) where the
        layer has no such formula."""
        return None

    def patch_index(self) -> Tensor | None:
        """Where each weight meets the input, for a layer ``z[o, l] = sum_q W[o, q] x[idx[q, l]]``.

        ``W`` is the weight reshaped to ``(out_channels, -1)``, ``l`` the output position (the
        flattened ``out_shape[1:]``; one for a fully connected layer), ``x`` one flat input and
        ``idx`` a long ``(q, l)`` tensor, ``-1`` where the weight meets zero padding. The audit
        builds the layer's matrix from it by indexing; None (the default) for a layer not of this
        form, whose matrix is built from the operator's products.
        """
        return None


class Folded(WeightOperator):
    """A weight operator preceded by parameter-free linear maps (``A' = A P_k ... P_1``)."""

    def __init__(self, maps: Sequence[LinearMap], core: WeightOperator) -> None:
        super().__init__(maps[0].in_shape, core.out_shape, core.weight, core.bias)
        self.maps = list(maps)
        self.core = core

    def with_weight(self, weight: Tensor) -> WeightOperator:
        return Folded(self.maps, self.core.with_weight(weight))

    def with_bias(self, bias: Tensor | None) -> WeightOperator:
        return Folded(self.maps, self.core.with_bias(bias))

    def padding_entries(self) -> int:
        return self.core.padding_entries()

    def _apply(self, x: Tensor) -> Tensor:
        for linear_map in self.maps:
            x = linear_map.apply(x)
        return x

    def _adjoint(self, y: Tensor) -> Tensor:
        for linear_map in reversed(self.maps):
            y = linear_map.adjoint(y)
        return y

    def forward(self, x: Tensor) -> Tensor:
        return self.core.forward(self._apply(x))

    def forward_adjoint(self, z: Tensor) -> Tensor:
        return self._adjoint(self.core.forward_adjoint(z))

    def gradient(self, x: Tensor, d: Tensor) -> Tensor:
        return self.core.gradient(self._apply(x), d)

    def gradient_adjoint(self, g: Tensor, d: Tensor) -> Tensor:
        return self._adjoint(self.core.gradient_adjoint(g, d))


class Selection(ABC):
    """A layer that picks one entry per window at data-dependent positions (max pooling).

    ``positions`` are flat indices into each channel's ``in_shape[1:]`` map, one per output
    entry, shaped ``(B, *out_shape)``; given them the layer is the linear map ``select`` with
    adjoint ``scatter``.
    """

    def __init__(self, in_shape: Shape, out_shape: Shape) -> None:
        self.in_shape = in_shape
        self.out_shape = out_shape

    @abstractmethod
    def apply(self, y: Tensor) -> Tensor:
        """The layer itself: ``(B, *in_shape) -> (B, *out_shape)``."""

    @abstractmethod
    def positions(self, z: Tensor) -> Tensor:
        """Where each window of ``z`` has its maximum (ties: the first), ``(B, *out_shape)``."""

    def select(self, full: Tensor, positions: Tensor) -> Tensor:
        """The entries of ``full`` (``(B, *in_shape)``) at ``positions``: ``(B, *out_shape)``."""
        flat = full.flatten(2).gather(2, positions.flatten(2))
        return flat.reshape(positions.shape)

    def scatter(self, values: Tensor, positions: Tensor) -> Tensor:
        """The adjoint of ``select``: ``values`` added at ``positions`` into a zero input map."""
        batch, channels = positions.shape[:2]
        out = values.new_zeros(batch, channels, math.prod(self.in_shape[1:]))
        out.scatter_add_(2, positions.flatten(2), values.flatten(2))
        return out.reshape(batch, *self.in_shape)


class ChannelAffine(ABC):
    """A layer that maps each channel ``c`` to ``scale_c * z + shift_c`` (constants)."""

    @abstractmethod
    def scale_and_shift(self) -> tuple[Tensor, Tensor]:
        """Per-channel ``scale`` and ``shift`` (float64 on the CPU)."""
