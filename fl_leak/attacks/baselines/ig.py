"""The ``ig`` attack: Inverting Gradients (Geiping et al., NeurIPS 2020).

Minimises ``1 - cos(grad(x), G) + tv_weight * TV(x)``, the cosine taken between all parameter
gradients at once (flattened and concatenated), by Adam on the signed gradient of the objective,
with the step size divided by 10 at 3/8, 5/8 and 7/8 of the iterations, the inputs projected into
their range after every step, and ``restarts`` random starts of which the lowest objective wins.
With the early stop on (``patience``), a stalled objective moves the schedule to its next step
size at once; a stall at the smallest one ends the restart.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fl_leak.attacks.baselines.common import (
    MatchingOptions,
    MatchingProblem,
    RestartResult,
    check_non_negative,
    project,
    run_attack,
    run_restart,
)
from fl_leak.attacks.correction import cosine_distance, total_variation
from fl_leak.attacks.registry import register_attack
from fl_leak.attacks.result import Reconstruction

DECAY_POINTS = (3 / 8, 5 / 8, 7 / 8)


@dataclass(frozen=True)
class IGOptions(MatchingOptions):
    """Options of ``ig`` (see :class:`MatchingOptions` for the shared ones).

    Defaults follow the reference implementation's configuration: Adam with ``lr`` 0.1,
    4,800 iterations, step decay by 10 at 3/8, 5/8 and 7/8 (``lr_decay``), signed gradients,
    the box constraint, total variation weight 0.1, one restart, labels from the bias gradient.
    """

    iterations: int = 4800
    lr: float = 0.1
    tv_weight: float = 0.1
    signed: bool = True
    lr_decay: bool = True
    log_every: int | None = 500

    def __post_init__(self) -> None:
        super().__post_init__()
        check_non_negative("tv_weight", self.tv_weight)

    def milestones(self) -> list[int]:
        """Iterations after which the step size is divided by 10."""
        return [int(self.iterations * point) for point in DECAY_POINTS] if self.lr_decay else []


class StepDecay:
    """Step size ``lr * 0.1**stage``; the stage rises at each milestone, or earlier on a stall."""

    def __init__(self, optimiser: torch.optim.Optimizer, lr: float, milestones: list[int]):
        self.optimiser, self.lr, self.milestones = optimiser, lr, milestones
        self.iteration = self.stage = 0

    def step(self) -> None:
        """Count one iteration; enter the stage its milestones call for."""
        self.iteration += 1
        self._enter(max(self.stage, bisect.bisect_right(self.milestones, self.iteration)))

    def advance(self) -> bool:
        """Enter the next stage now; False when already at the last."""
        if self.stage >= len(self.milestones):
            return False
        self._enter(self.stage + 1)
        return True

    def _enter(self, stage: int) -> None:
        self.stage = stage
        for group in self.optimiser.param_groups:
            group["lr"] = self.lr * 0.1**stage


def ig_restart(
    problem: MatchingProblem, options: IGOptions, restart: int, variables: list[Tensor]
) -> RestartResult:
    """One restart of ``ig`` from ``variables`` (inputs, then label logits if optimised), matching
    ``problem.trial_gradients`` to ``problem.observed``."""
    observed = torch.cat([g.reshape(-1) for g in problem.observed])
    inputs = variables[0]
    label_logits = variables[1] if len(variables) > 1 else None

    def objective() -> Tensor:
        trial = torch.cat([g.reshape(-1) for g in problem.trial_gradients(inputs, label_logits)])
        return cosine_distance([trial], [observed]) + options.tv_weight * total_variation(inputs)

    optimiser = torch.optim.Adam(variables, lr=options.lr)
    schedule = StepDecay(optimiser, options.lr, options.milestones())

    def step() -> float:
        value = objective()
        grads = list(torch.autograd.grad(value, variables))
        if options.signed:
            grads[0] = grads[0].sign()
        for variable, grad in zip(variables, grads, strict=True):
            variable.grad = grad
        optimiser.step()
        schedule.step()
        project(inputs, options.input_range)
        return float(value.detach())

    def evaluate() -> float:
        return float(objective().detach())

    return run_restart(restart, variables, step, evaluate, options, "ig", schedule.advance)


@register_attack("ig", IGOptions)
def ig_attack(
    model: nn.Module,
    gradients: Sequence[Tensor],
    input_shape: tuple[int, ...],
    batch_size: int,
    labels: Tensor | None,
    options: IGOptions,
) -> Reconstruction:
    """Inverting Gradients: cosine gradient matching plus total variation, by signed Adam.

    Works on any differentiable ``nn.Module``, used in the mode it is passed in. Options (the
    fields of :class:`IGOptions` and :class:`~fl_leak.attacks.baselines.common.MatchingOptions`):
    ``iterations`` (4800), ``lr`` (0.1), ``lr_decay`` (True), ``signed`` (True), ``tv_weight``
    (0.1), ``restarts`` (1), ``input_range`` ((0, 1)), ``label_strategy`` ("recover"),
    ``patience`` (None), ``tolerance`` (1e-4), ``log_every`` (500), ``callback`` (None),
    ``seed`` (0), ``device`` ("cpu"), ``dtype`` (None: the model's), ``threads`` (1: torch
    intra-op threads for the whole call, None keeps torch's setting; see :mod:`fl_leak.threads`).
    """
    return run_attack("ig", ig_restart, model, gradients, input_shape, batch_size, labels, options)
