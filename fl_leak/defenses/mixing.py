"""Input mixing on the client: MixUp and InstaHide-style mixing with random sign flips.

Both train on mixtures of each private image with others of the client's own partition, with
the labels mixed in the same proportions (class probabilities). The attack is scored against
the original images, so the records measure what mixing hides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fl_leak.defenses.base import Batch, Defense, LocalPool, check_positive, register_defense


def _numpy_rng(generator: torch.Generator) -> np.random.Generator:
    """A NumPy generator drawn from ``generator`` (for Beta and Dirichlet samples)."""
    return np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator)))


def _mix(batch: Batch, pool: LocalPool, coefficients: np.ndarray) -> tuple[Tensor, Tensor]:
    """Mix each image of ``batch`` (weight ``coefficients[:, 0]``) with random pool images.

    ``coefficients`` has one row per image, one column per mixed image, rows summing to 1.
    Returns the mixed images and their class-probability labels.
    """
    images, labels = batch
    count, parts = coefficients.shape
    partners = torch.randint(len(pool.labels), (count, parts - 1), generator=pool.generator)
    weights = torch.from_numpy(coefficients).to(images.dtype)
    stacked = torch.cat([images[:, None], pool.images[partners].to(images.dtype)], dim=1)
    stacked_labels = torch.cat([labels[:, None], pool.labels[partners]], dim=1)
    one_hot = F.one_hot(stacked_labels, pool.num_classes).to(images.dtype)
    shape = (count, parts) + (1,) * (images.dim() - 1)
    mixed = (weights.view(shape) * stacked).sum(dim=1)
    soft = (weights[:, :, None] * one_hot).sum(dim=1)
    return mixed, soft


@register_defense("mixup")
@dataclass(frozen=True)
class MixUp(Defense):
    """MixUp (Zhang et al., 2018): each image mixed with one other of the client's partition,
    ``lambda ~ Beta(alpha, alpha)``; larger ``alpha`` mixes more evenly."""

    alpha: float = 1.0

    def __post_init__(self) -> None:
        check_positive("alpha", self.alpha)

    def local_batches(self, batches: list[Batch], pool: LocalPool) -> list[Batch]:
        """Mix every batch."""
        rng = _numpy_rng(pool.generator)
        mixed = []
        for batch in batches:
            lam = rng.beta(self.alpha, self.alpha, size=len(batch[1]))
            mixed.append(_mix(batch, pool, np.stack([lam, 1 - lam], axis=1)))
        return mixed


@register_defense("instahide")
@dataclass(frozen=True)
class InstaHide(Defense):
    """InstaHide-style mixing (Huang et al., 2020): each image mixed with ``k - 1`` others of the
    client's partition, coefficients ``~ Dirichlet(1, ..., 1)``, then every pixel's sign flipped
    at random (a fresh mask per image and step). Images stay in [0, 1] before the flip."""

    k: int = 4

    def __post_init__(self) -> None:
        if self.k < 2:
            raise ValueError(f"k={self.k} must be at least 2 (images mixed together)")

    def local_batches(self, batches: list[Batch], pool: LocalPool) -> list[Batch]:
        """Mix every batch and flip signs."""
        rng = _numpy_rng(pool.generator)
        hidden = []
        for batch in batches:
            coefficients = rng.dirichlet(np.ones(self.k), size=len(batch[1]))
            mixed, soft = _mix(batch, pool, coefficients)
            signs = torch.randint(2, mixed.shape, generator=pool.generator) * 2 - 1
            hidden.append((mixed * signs.to(mixed.dtype), soft))
        return hidden
