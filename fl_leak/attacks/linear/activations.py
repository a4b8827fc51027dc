"""Activation adapters: each inverts its activation and gives its derivative from the output.

The derivative is written as a function of the activation's *output*, which is what the walk has
once the layer above is reconstructed; this keeps ReLU-type activations usable (their derivative is
known from the sign of the output even where their inverse is not).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fl_leak.registry import Registry

# Outputs this close to a bounded activation's edge are clipped before inversion: the inverse is
# unbounded there, so such rows carry no usable forward constraint.
EDGE = 1e-12
# Relative size below which a reconstructed ReLU output is taken as an inactive unit.
ZERO = 1e-6
# Relative distance from the kink within which a (leaky) ReLU output's side is decided by the
# rounding of a float32 update (unit roundoff 6e-8): see ``near_kink``.
KINK = 1e-7


@dataclass(frozen=True)
class Inversion:
    """Pre-activation values recovered from outputs, and which of them are trustworthy."""

    pre_activation: Tensor
    valid: Tensor  # bool, same shape: rows usable as forward constraints
    clipped: int  # how many outputs lay at or past the activation's domain edge


class Activation(ABC):
    """An element-wise activation ``y = s(z)`` as the linear attack needs it."""

    name: str = "activation"

    @abstractmethod
    def forward(self, z: Tensor) -> Tensor:
        """``s(z)``."""

    @abstractmethod
    def inverse(self, y: Tensor) -> Inversion:
        """Recover ``z`` from ``y``, flagging entries where that is impossible or clipped."""

    @abstractmethod
    def derivative(self, y: Tensor) -> Tensor:
        """``s'(z)`` expressed through the output ``y = s(z)``."""

    def near_kink(self, y: Tensor, tolerance: float = KINK) -> int:
        """Outputs within ``tolerance`` times the largest of a kink, where ``s'`` jumps (none)."""
        return 0


class Identity(Activation):
    name = "identity"

    def forward(self, z: Tensor) -> Tensor:
        return z

    def inverse(self, y: Tensor) -> Inversion:
        return Inversion(y, torch.ones_like(y, dtype=torch.bool), 0)

    def derivative(self, y: Tensor) -> Tensor:
        return torch.ones_like(y)


class Tanh(Activation):
    name = "tanh"

    def forward(self, z: Tensor) -> Tensor:
        return torch.tanh(z)

    def inverse(self, y: Tensor) -> Inversion:
        inside = y.abs() < 1 - EDGE
        z = torch.atanh(y.clamp(-1 + EDGE, 1 - EDGE))
        return Inversion(z, inside, int((~inside).sum()))

    def derivative(self, y: Tensor) -> Tensor:
        return 1 - y.clamp(-1, 1) ** 2


class Sigmoid(Activation):
    name = "sigmoid"

    def forward(self, z: Tensor) -> Tensor:
        return torch.sigmoid(z)

    def inverse(self, y: Tensor) -> Inversion:
        inside = (y > EDGE) & (y < 1 - EDGE)
        z = torch.logit(y.clamp(EDGE, 1 - EDGE))
        return Inversion(z, inside, int((~inside).sum()))

    def derivative(self, y: Tensor) -> Tensor:
        y = y.clamp(0, 1)
        return y * (1 - y)


class LeakyReLU(Activation):
    """Leaky ReLU of any slope; slope 0 is ReLU, whose negative side cannot be inverted."""

    def __init__(self, negative_slope: float) -> None:
        self.slope = float(negative_slope)
        self.name = "relu" if self.slope == 0 else f"leaky_relu({self.slope:g})"

    def forward(self, z: Tensor) -> Tensor:
        return F.leaky_relu(z, self.slope)

    def _active(self, y: Tensor) -> Tensor:
        """Units above zero; for ReLU, outputs within ``ZERO`` of the largest count as zero (a
        reconstructed inactive unit comes back as rounding noise around 0, not as 0)."""
        if self.slope != 0:
            return y > 0
        return y > ZERO * y.detach().abs().amax().clamp_min(torch.finfo(y.dtype).tiny)

    def inverse(self, y: Tensor) -> Inversion:
        positive = self._active(y)
        if self.slope == 0:
            return Inversion(torch.where(positive, y, torch.zeros_like(y)), positive, 0)
        z = torch.where(positive, y, y / self.slope)
        return Inversion(z, torch.ones_like(positive), 0)

    def derivative(self, y: Tensor) -> Tensor:
        return torch.where(self._active(y), torch.ones_like(y), torch.full_like(y, self.slope))

    def near_kink(self, y: Tensor, tolerance: float = KINK) -> int:
        """Outputs within ``tolerance`` times the largest of 0 (for ReLU: nonzero ones only, a zero
        being an inactive unit): rounding decides their side, and with it their derivative."""
        if tolerance <= 0:
            return 0
        magnitude = y.detach().abs()
        near = magnitude <= tolerance * magnitude.max()
        if self.slope == 0:
            near &= magnitude > 0
        return int(near.sum())


class Softplus(Activation):
    """``y = log(1 + exp(beta z)) / beta``, linear above ``threshold`` as in PyTorch."""

    def __init__(self, beta: float, threshold: float) -> None:
        self.beta = float(beta)
        self.threshold = float(threshold)
        self.name = "softplus"

    def forward(self, z: Tensor) -> Tensor:
        return F.softplus(z, self.beta, self.threshold)

    def inverse(self, y: Tensor) -> Inversion:
        scaled = self.beta * y
        inside = scaled > EDGE
        safe = scaled.clamp(min=EDGE)
        # log(expm1(s)) = s + log1p(-exp(-s)) stays finite for large s
        z = torch.where(safe > self.threshold, safe, safe + torch.log(-torch.expm1(-safe)))
        return Inversion(z / self.beta, inside, int((~inside).sum()))

    def derivative(self, y: Tensor) -> Tensor:
        scaled = (self.beta * y).clamp(min=0)
        return torch.where(scaled > self.threshold, torch.ones_like(y), -torch.expm1(-scaled))


ActivationFactory = Callable[[nn.Module], Activation]

# The one table of element-wise activations: module type -> adapter, under the name layer specs
# use (``{"type": "act", "name": "tanh"}``, see :mod:`fl_leak.models.builder`).
ACTIVATIONS: Registry[type[nn.Module], ActivationFactory] = Registry("activation")


def register_activation(
    module_type: type[nn.Module], name: str | None = None
) -> Callable[[ActivationFactory], ActivationFactory]:
    """Register ``factory(module) -> Activation`` for ``module_type`` under ``name`` (default:
    the class name in lower case)."""
    return ACTIVATIONS.register(module_type, name)


register_activation(nn.Identity)(lambda module: Identity())
register_activation(nn.Tanh)(lambda module: Tanh())
register_activation(nn.Sigmoid)(lambda module: Sigmoid())
register_activation(nn.ReLU)(lambda module: LeakyReLU(0.0))


@register_activation(nn.LeakyReLU, "leaky_relu")
def _leaky_relu(module: nn.Module) -> Activation:
    assert isinstance(module, nn.LeakyReLU)
    return LeakyReLU(module.negative_slope)


@register_activation(nn.Softplus)
def _softplus(module: nn.Module) -> Activation:
    assert isinstance(module, nn.Softplus)
    return Softplus(module.beta, module.threshold)


def activation_for(module: nn.Module) -> Activation | None:
    """The adapter for ``module``, or None when it is not a supported activation."""
    factory = ACTIVATIONS.find(type(module))
    return factory(module) if factory else None


def activation_module(name: str) -> type[nn.Module]:
    """The module type registered as activation ``name`` (``tanh``, ``leaky_relu``, ...)."""
    return ACTIVATIONS.key_named(name)


def supported_activation_names() -> list[str]:
    """Class names of every supported activation module (for error messages)."""
    return [module_type.__name__ for module_type in ACTIVATIONS]


__all__ = [
    "ACTIVATIONS",
    "EDGE",
    "Activation",
    "Inversion",
    "activation_for",
    "activation_module",
    "register_activation",
    "supported_activation_names",
]
