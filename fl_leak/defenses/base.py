"""What a defense can change, and where it acts in a federated round.

A defense overrides one (or more) of the stages a real deployment offers:

- :meth:`Defense.local_batches`: the client's training inputs (input mixing: MixUp, InstaHide);
- :meth:`Defense.local_training`: the client's optimiser (DP-SGD);
- :meth:`Defense.protect_update`: the update the client sends (pruning, top-k, local DP noise);
- :meth:`Defense.wrap_strategy`: the server's aggregation (central DP);
- :attr:`Defense.secure_aggregation`: the server receives only the sum (SecAgg+).

The default of every stage leaves the round as it is, so ``none`` is the base class itself.
The attack always scores against the client's original (unmixed, unperturbed) batch.

A defense is a frozen dataclass whose fields are its options, registered by name with
:func:`register_defense`; its ``__post_init__`` refuses values out of range.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from flwr.serverapp.strategy import Strategy
from torch import Tensor, nn

from fl_leak.errors import UnknownDefenseError
from fl_leak.registry import Registry

Batch = tuple[Tensor, Tensor]
Trainer = Callable[[nn.Module, list[Batch], float], list[float]]


@dataclass(frozen=True)
class LocalPool:
    """A client's own data, for defenses that mix inputs: images in [0, 1] and labels.

    ``generator`` is seeded per (seed, round, client), so a defense's randomness repeats.
    """

    images: Tensor
    labels: Tensor
    num_classes: int
    generator: torch.Generator


@dataclass
class LocalOutcome:
    """A client's training in one round: each step's loss and the defense's own metrics."""

    losses: list[float]
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Defense:
    """No defense: every stage leaves the round as it is. Subclasses override their stage."""

    secure_aggregation: ClassVar[bool] = False

    def local_batches(self, batches: list[Batch], pool: LocalPool) -> list[Batch]:
        """The batches the client trains on (labels may become class probabilities)."""
        return batches

    def local_training(
        self,
        model: nn.Module,
        batches: list[Batch],
        lr: float,
        train: Trainer,
        pool: LocalPool,
        steps_before: int,
    ) -> LocalOutcome:
        """Train ``model`` in place on ``batches``; ``train`` is the plain SGD the round uses.

        ``steps_before`` counts this client's local steps in earlier rounds (for accounting).
        """
        return LocalOutcome(train(model, batches, lr))

    def protect_update(
        self, sent: dict[str, Tensor], trained: dict[str, Tensor], generator: torch.Generator
    ) -> dict[str, Tensor]:
        """The weights the client replies with, from the weights it received and trained."""
        return trained

    def wrap_strategy(self, strategy: Strategy, num_sampled_clients: int) -> Strategy:
        """The strategy the server runs (the malicious one, possibly wrapped)."""
        return strategy

    def describe(self) -> str:
        """The defense's strength as ``key=value`` pairs (empty for ``none``)."""
        return ",".join(f"{key}={value}" for key, value in sorted(self.options().items()))

    def options(self) -> dict[str, Any]:
        """The defense's options by name."""
        return dict(self.__dict__)


DEFENSES: Registry[str, type[Defense]] = Registry("defense", error=UnknownDefenseError)


def register_defense(name: str) -> Callable[[type[Defense]], type[Defense]]:
    """Register a :class:`Defense` subclass (a frozen dataclass of its options) under ``name``."""
    return DEFENSES.register(name)


register_defense("none")(Defense)


def check_fraction(name: str, value: float, *, closed_low: bool = True) -> None:
    """Raise ``ValueError`` unless ``value`` is a fraction in [0, 1] (or (0, 1])."""
    low_ok = value >= 0 if closed_low else value > 0
    if not (low_ok and value <= 1):
        interval = "[0, 1]" if closed_low else "(0, 1]"
        raise ValueError(f"{name}={value} must be in {interval}")


def check_positive(name: str, value: float) -> None:
    """Raise ``ValueError`` unless ``value`` > 0."""
    if not value > 0:
        raise ValueError(f"{name}={value} must be positive")


def update_of(sent: dict[str, Tensor], trained: dict[str, Tensor]) -> dict[str, Tensor]:
    """Per floating-point tensor, the update ``trained - sent`` (integer buffers left out)."""
    return {
        name: trained[name] - sent[name]
        for name in trained
        if torch.is_floating_point(trained[name])
    }


def weights_from(
    sent: dict[str, Tensor], trained: dict[str, Tensor], update: dict[str, Tensor]
) -> dict[str, Tensor]:
    """The reply's weights: ``sent + update`` where an update is given, else ``trained``."""
    return {
        name: (sent[name] + update[name]).to(sent[name].dtype) if name in update else value
        for name, value in trained.items()
    }
