"""Defenses on the client's update: pruning, top-k sparsification and quantisation."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from fl_leak.defenses.base import (
    Defense,
    check_fraction,
    register_defense,
    update_of,
    weights_from,
)


def _zero_smallest(values: Tensor, drop: int) -> Tensor:
    """``values`` with its ``drop`` smallest-magnitude entries set to zero."""
    if drop <= 0:
        return values
    flat = values.flatten().clone()
    flat[flat.abs().argsort()[:drop]] = 0
    return flat.view_as(values)


@register_defense("prune")
@dataclass(frozen=True)
class Prune(Defense):
    """Gradient pruning (Zhu et al., 2019): per tensor, zero the ``fraction`` smallest entries
    of the update by magnitude (``fraction`` 0.9 keeps the largest 10% of each tensor)."""

    fraction: float = 0.9

    def __post_init__(self) -> None:
        check_fraction("fraction", self.fraction)

    def protect_update(
        self, sent: dict[str, Tensor], trained: dict[str, Tensor], generator: torch.Generator
    ) -> dict[str, Tensor]:
        """Prune every tensor of the update."""
        update = {
            name: _zero_smallest(value, math.floor(self.fraction * value.numel()))
            for name, value in update_of(sent, trained).items()
        }
        return weights_from(sent, trained, update)


def quantize(values: Tensor, bits: int) -> Tensor:
    """Quantise ``values`` to ``bits`` bits.

    One bit: the sign times the mean magnitude of the non-zero entries (signSGD-style). More:
    uniform symmetric levels, ``2**bits - 1`` of them, over ``[-max|v|, max|v|]``.
    """
    nonzero = values[values != 0]
    if nonzero.numel() == 0:
        return values
    if bits == 1:
        return values.sign() * nonzero.abs().mean()
    scale = nonzero.abs().max()
    steps = 2 ** (bits - 1) - 1
    return torch.round(values / scale * steps) / steps * scale


@register_defense("topk")
@dataclass(frozen=True)
class TopK(Defense):
    """Top-k sparsification: keep the ``keep`` fraction of the whole update's entries with the
    largest magnitude (one threshold across tensors), zero the rest; then, if ``bits`` > 0,
    quantise each tensor's kept values uniformly to ``bits`` bits."""

    keep: float = 0.1
    bits: int = 0

    def __post_init__(self) -> None:
        check_fraction("keep", self.keep, closed_low=False)
        if self.bits < 0:
            raise ValueError(f"bits={self.bits} must be 0 (no quantisation) or more")

    def protect_update(
        self, sent: dict[str, Tensor], trained: dict[str, Tensor], generator: torch.Generator
    ) -> dict[str, Tensor]:
        """Sparsify (and quantise) the update."""
        update = update_of(sent, trained)
        flat = torch.cat([value.flatten().double() for value in update.values()])
        kept = max(1, math.ceil(self.keep * flat.numel()))
        threshold = flat.abs().topk(kept).values[-1]
        sparse = {}
        for name, value in update.items():
            value = torch.where(value.abs() >= threshold, value, torch.zeros_like(value))
            sparse[name] = quantize(value, self.bits) if self.bits > 0 else value
        return weights_from(sent, trained, sparse)
