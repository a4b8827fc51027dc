"""The ``dlg`` attack: Deep Leakage from Gradients (Zhu et al., NeurIPS 2019).

Minimises the squared Euclidean distance ``sum_k ||grad_k(x, y) - G_k||^2`` between the gradients
of dummy inputs and soft dummy labels and the observed ones, over both, by L-BFGS from a standard
normal start. The inputs are left unconstrained, as published.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fl_leak.attacks.baselines.common import (
    MatchingOptions,
    MatchingProblem,
    RestartResult,
    check_positive_int,
    project,
    run_attack,
    run_restart,
)
from fl_leak.attacks.registry import register_attack
from fl_leak.attacks.result import Reconstruction
from fl_leak.errors import FlLeakError

LINE_SEARCHES = (None, "strong_wolfe")


@dataclass(frozen=True)
class DLGOptions(MatchingOptions):
    """Options of ``dlg`` (see :class:`MatchingOptions` for the shared ones).

    Defaults follow the published method (300 L-BFGS iterations with step size ``lr`` 1, at most
    ``max_evaluations`` (20) objective evaluations each, ``history_size`` 100, labels optimised
    jointly, no box constraint) except the line search: the published code runs PyTorch's L-BFGS
    without one, which on the paper's networks often takes a first step into saturation and stops
    there; ``line_search="strong_wolfe"`` avoids that, ``None`` reproduces the published runs.
    """

    iterations: int = 300
    lr: float = 1.0
    max_evaluations: int = 20
    history_size: int = 100
    line_search: str | None = "strong_wolfe"
    label_strategy: str = "joint"
    input_range: tuple[float, float] | None = None
    log_every: int | None = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int("max_evaluations", self.max_evaluations)
        check_positive_int("history_size", self.history_size)
        if self.line_search not in LINE_SEARCHES:
            raise FlLeakError(
                f"line_search must be one of {LINE_SEARCHES}, got {self.line_search!r}"
            )


def _restart(
    problem: MatchingProblem, options: DLGOptions, restart: int, variables: list[Tensor]
) -> RestartResult:
    inputs = variables[0]
    label_logits = variables[1] if len(variables) > 1 else None

    def objective() -> Tensor:
        trial = problem.trial_gradients(inputs, label_logits)
        pairs = zip(trial, problem.observed, strict=True)
        return torch.stack([(mine - theirs).square().sum() for mine, theirs in pairs]).sum()

    optimiser = torch.optim.LBFGS(
        variables,
        lr=options.lr,
        max_iter=options.max_evaluations,
        history_size=options.history_size,
        line_search_fn=options.line_search,
    )

    def closure() -> Tensor:
        value = objective()
        grads = torch.autograd.grad(value, variables)
        for variable, grad in zip(variables, grads, strict=True):
            variable.grad = grad
        return value.detach()

    def step() -> float:
        value = float(optimiser.step(closure))
        project(inputs, options.input_range)
        return value

    def evaluate() -> float:
        return float(objective().detach())

    return run_restart(restart, variables, step, evaluate, options, "dlg")


@register_attack("dlg", DLGOptions)
def dlg_attack(
    model: nn.Module,
    gradients: Sequence[Tensor],
    input_shape: tuple[int, ...],
    batch_size: int,
    labels: Tensor | None,
    options: DLGOptions,
) -> Reconstruction:
    """Deep Leakage from Gradients: L2 gradient matching by L-BFGS, labels optimised jointly.

    Works on any differentiable ``nn.Module``, used in the mode it is passed in. Options (the
    fields of :class:`DLGOptions` and :class:`~fl_leak.attacks.baselines.common.MatchingOptions`):
    ``iterations`` (300), ``lr`` (1.0), ``max_evaluations`` (20), ``history_size`` (100),
    ``line_search`` ("strong_wolfe" or None), ``restarts`` (1), ``input_range`` (None),
    ``label_strategy`` ("joint"), ``patience`` (None), ``tolerance`` (1e-4), ``log_every`` (10),
    ``callback`` (None), ``seed`` (0), ``device`` ("cpu"), ``dtype`` (None: the model's),
    ``threads`` (1: torch intra-op threads for the whole call, None keeps torch's setting; see
    :mod:`fl_leak.threads`).
    """
    return run_attack("dlg", _restart, model, gradients, input_shape, batch_size, labels, options)
