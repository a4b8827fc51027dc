"""The client's local training as the server configured it, and its simulation.

A FedAvg client with ``M`` samples takes ``local_steps`` steps of plain SGD with learning rate
``local_lr``, passing over its samples in mini-batches of ``local_batch_size`` (the last batch of a
pass possibly smaller), reshuffled at every pass; with ``local_epochs`` > 0 it takes that many
whole passes instead (``local_epochs * ceil(M / local_batch_size)`` steps). The server knows this
schedule; the samples and the order in which each pass visits them are the unknowns.

The update is given to the attacks in gradient units, as every other attack receives it:
``(w_sent - w_returned) / (local_lr * steps)`` (:mod:`fl_leak.fl.gradients`);
:func:`simulate_update` returns the same quantity for candidate samples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from fl_leak.attacks.registry import attack_options
from fl_leak.errors import FlLeakError
from fl_leak.options import check_non_negative_int, check_positive, check_positive_int
from fl_leak.schedule import TrainingSettings as TrainingSettings
from fl_leak.schedule import local_step_count
from fl_leak.schedule import trained_samples as trained_samples

SCHEDULE_FIELDS = ("local_lr", "local_steps", "local_batch_size", "local_epochs")

Order = tuple[tuple[int, ...], ...]  # per pass, the sample visited at each position


@dataclass(frozen=True)
class ScheduleOptions:
    """The client's local schedule, options of every FedAvg attack.

    Attributes
    ----------
    local_lr : float or None
        The client's SGD learning rate (required, > 0).
    local_steps : int
        Local SGD steps (>= 1; ignored when ``local_epochs`` > 0).
    local_batch_size : int or None
        The mini-batch size of each step; None: all the samples (every step on the whole batch).
    local_epochs : int
        Whole passes over the samples (0: take ``local_steps`` steps).
    """

    local_lr: float | None = None
    local_steps: int = 1
    local_batch_size: int | None = None
    local_epochs: int = 0

    def check_schedule(self) -> None:
        """Raise :class:`~fl_leak.errors.FlLeakError` naming a schedule option out of range."""
        if self.local_lr is None:
            raise FlLeakError(
                "local_lr (the client's learning rate) is required by the FedAvg attacks"
            )
        check_positive("local_lr", self.local_lr)
        check_positive_int("local_steps", self.local_steps)
        check_positive_int("local_batch_size", self.local_batch_size, optional=True)
        check_non_negative_int("local_epochs", self.local_epochs)

    def schedule(self, samples: int) -> Schedule:
        """The schedule of a client holding ``samples`` samples."""
        assert self.local_lr is not None
        batch = samples if self.local_batch_size is None else min(self.local_batch_size, samples)
        steps = local_step_count(self.local_steps, self.local_epochs, batch, samples)
        return Schedule(samples, batch, steps, float(self.local_lr))


@dataclass(frozen=True)
class Schedule:
    """``steps`` SGD steps of rate ``lr`` over ``samples`` samples in batches of ``batch``."""

    samples: int
    batch: int
    steps: int
    lr: float

    @property
    def passes(self) -> int:
        """How many passes the steps start (the last one possibly cut short)."""
        return math.ceil(self.steps / math.ceil(self.samples / self.batch))

    def identity(self) -> Order:
        """Every pass visits the samples in index order."""
        return tuple(tuple(range(self.samples)) for _ in range(self.passes))

    def batches(self, order: Order) -> list[list[int]]:
        """The samples of each step when the passes visit them in ``order``."""
        steps: list[list[int]] = []
        for visit in order:
            steps += [list(visit[k : k + self.batch]) for k in range(0, self.samples, self.batch)]
        return steps[: self.steps]


def simulate_update(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    schedule: Schedule,
    order: Order,
    create_graph: bool = False,
) -> list[Tensor]:
    """The client's update in gradient units, ``(w_0 - w_S) / (lr * steps)``, for ``inputs``
    trained on in ``order`` from ``model``'s weights: the mean of the steps' gradients.

    ``targets`` are class indices or class probabilities (rows aligned with ``inputs``). With
    ``create_graph`` the result is differentiable in ``inputs`` (and ``targets``).
    """
    names = [name for name, _ in model.named_parameters()]
    weights = [parameter.detach().requires_grad_(True) for parameter in model.parameters()]
    total: list[Tensor] = [torch.zeros_like(w) for w in weights]
    for batch in schedule.batches(order):
        index = torch.tensor(batch, device=inputs.device)
        outputs = functional_call(model, dict(zip(names, weights, strict=True)), (inputs[index],))
        loss = F.cross_entropy(outputs, targets[index])
        gradients = torch.autograd.grad(loss, weights, create_graph=create_graph)
        weights = [w - schedule.lr * g for w, g in zip(weights, gradients, strict=True)]
        total = [t + g for t, g in zip(total, gradients, strict=True)]
    return [t / schedule.steps for t in total]


def batch_gradient(model: nn.Module, inputs: Tensor, targets: Tensor) -> list[Tensor]:
    """The gradient of the batch-mean cross-entropy of all ``inputs`` at ``model``'s weights
    (what the first-order view takes the update for)."""
    parameters = [parameter.detach().requires_grad_(True) for parameter in model.parameters()]
    names = [name for name, _ in model.named_parameters()]
    outputs = functional_call(model, dict(zip(names, parameters, strict=True)), (inputs,))
    return list(torch.autograd.grad(F.cross_entropy(outputs, targets), parameters))


def relative_distance(estimate: Sequence[Tensor], observed: Sequence[Tensor]) -> float:
    """``||estimate - observed|| / ||observed||`` over all tensors together."""
    difference = sum(float(((e - o) ** 2).sum()) for e, o in zip(estimate, observed, strict=True))
    reference = sum(float((o**2).sum()) for o in observed)
    return math.sqrt(difference / max(reference, 1e-300))


def server_schedule(training: TrainingSettings) -> dict[str, Any]:
    """The schedule options of the FedAvg attacks, from what the server configured."""
    return {
        "local_lr": training.lr,
        "local_steps": training.local_steps,
        "local_batch_size": training.batch_size,
        "local_epochs": training.local_epochs,
    }


def takes_schedule(attack: str) -> bool:
    """Whether attack ``attack`` declares the client's schedule among its options (a FedAvg
    attack, which reconstructs every sample of the local training)."""
    return issubclass(attack_options(attack), ScheduleOptions)


def with_schedule(
    attack: str, options: Mapping[str, Any], schedule: Mapping[str, Any]
) -> dict[str, Any]:
    """``options`` plus the server's ``schedule`` (``local_lr``, ...) where ``attack`` takes it.

    The server fills the schedule from what it configured; an attack configuration that sets
    it too is refused (the two could disagree).
    """
    if not takes_schedule(attack):
        return dict(options)
    clash = sorted(set(options) & set(SCHEDULE_FIELDS))
    if clash:
        raise FlLeakError(
            f"attack {attack!r}: {', '.join(clash)} are set by the server from the clients' "
            "training settings (fl.lr, fl.local_steps, fl.batch_size, fl.local_epochs); "
            "remove them from the attack's options"
        )
    return {**options, **schedule}
