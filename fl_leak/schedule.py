"""A client's local training as the server configures it: the settings and the step-count rule.

Shared by the client's own training (:mod:`fl_leak.fl.local_data`), the server's view of the
update (:mod:`fl_leak.fl.leakage`) and the FedAvg attacks' schedule
(:mod:`fl_leak.attacks.fedavg.schedule`), so that all three count the same steps.
"""

from __future__ import annotations

import math
from typing import Protocol


class LocalSchedule(Protocol):
    """The local-training settings the step count depends on (``FlConfig`` and
    ``AttackSettings`` have them)."""

    @property
    def batch_size(self) -> int: ...

    @property
    def local_steps(self) -> int: ...

    @property
    def local_epochs(self) -> int: ...


class TrainingSettings(LocalSchedule, Protocol):
    """The clients' training settings the server configured: the schedule and the SGD rate."""

    @property
    def lr(self) -> float: ...


def local_step_count(local_steps: int, local_epochs: int, batch_size: int, samples: int) -> int:
    """Local SGD steps of a client holding ``samples`` samples: ``local_steps``, or with
    ``local_epochs`` > 0 that many passes in mini-batches of ``batch_size`` (the last one
    possibly smaller)."""
    if local_epochs > 0:
        return local_epochs * math.ceil(samples / batch_size)
    return local_steps


def step_count(fl: LocalSchedule, num_examples: int) -> int:
    """Local SGD steps of a client that trains on ``num_examples`` samples
    (:func:`local_step_count` of ``fl``'s settings). The server applies the same rule to the
    hyper-parameters it configured and the sample count the client reports."""
    return local_step_count(fl.local_steps, fl.local_epochs, fl.batch_size, num_examples)


def trained_samples(samples: int, batch: int, steps: int, epochs: int) -> int:
    """How many distinct samples a client holding ``samples`` trains on: all of them over whole
    passes (``epochs`` > 0) or once the steps wrap around, else the ``steps * batch`` it visits."""
    if epochs > 0:
        return samples
    return min(samples, steps * batch)
