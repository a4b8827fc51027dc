"""What the optimisation attacks share: options, the matching problem, and the iteration loop.

An optimisation attack searches for inputs (and, optionally, soft labels) whose gradients on the
server's copy of the model match the observed ones. The model is used in the mode it is passed in:
a model in train mode with BatchNorm normalises the dummy batch with its own batch statistics, as
the client's forward pass did; a model in eval mode uses the running statistics. The attack works
on a deep copy, so the caller's model (and its BatchNorm buffers) is never modified. Dropout in
train mode makes the forward pass random and the match only approximate: pass such models in eval
mode if the client trained without dropout.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fl_leak.attacks.label_recovery import recover_labels
from fl_leak.attacks.linear.chain import check_gradients, check_input_shape
from fl_leak.attacks.result import Reconstruction, RestartDiagnostics
from fl_leak.errors import FlLeakError
from fl_leak.options import check_non_negative, check_positive_int, torch_dtype
from fl_leak.threads import DEFAULT_THREADS, check_threads

logger = logging.getLogger("fl_leak.attacks.baselines")

LABEL_STRATEGIES = ("recover", "joint")


@dataclass(frozen=True)
class Progress:
    """What a ``callback`` receives after every iteration.

    ``restart`` counts from 1; ``loss`` is the objective at ``inputs``, the iterate before the
    iteration's step (a detached copy); ``seconds`` since the restart began.
    """

    restart: int
    iteration: int
    loss: float
    inputs: Tensor
    seconds: float


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class MatchingOptions:
    """Options every optimisation attack takes (each attack sets its own defaults).

    Attributes
    ----------
    iterations : int
        Optimiser steps per restart.
    lr : float
        The optimiser's step size.
    restarts : int
        Independent random starts; the one with the lowest final objective is returned.
    label_strategy : {"recover", "joint"}
        Without given labels: ``"recover"`` takes them from the last layer's gradients
        (:func:`fl_leak.recover_labels`); ``"joint"`` optimises soft labels
        alongside the inputs and returns their argmax.
    input_range : (float, float) or None
        Box the inputs are projected into after each step; ``None`` leaves them free.
    patience : int or None
        Early stop: end a restart when the best objective has not improved by a relative
        ``tolerance`` for ``patience`` iterations. ``None`` runs every iteration.
    tolerance : float
        Relative improvement that counts as progress for the early stop.
    log_every : int or None
        Log iteration and objective (``logging`` INFO, logger ``fl_leak.attacks.baselines``) every
        this many iterations; ``None`` logs only each restart's end.
    callback : callable or None
        Called with a :class:`Progress` after every iteration.
    seed : int
        Seed of the random starts.
    device : str or torch.device
        Where the optimisation runs (the model is copied there).
    dtype : "float32", "float64", torch.dtype or None
        Precision of the model copy and the inputs; ``None`` keeps the model's.
    threads : int or None
        Torch intra-op threads for the whole attack (:mod:`fl_leak.threads`); ``None`` keeps
        torch's setting.
    """

    iterations: int = 1000
    lr: float = 0.1
    restarts: int = 1
    label_strategy: str = "recover"
    input_range: tuple[float, float] | None = (0.0, 1.0)
    patience: int | None = None
    tolerance: float = 1e-4
    log_every: int | None = 100
    callback: ProgressCallback | None = None
    seed: int = 0
    device: str | torch.device = "cpu"
    dtype: str | torch.dtype | None = None
    threads: int | None = DEFAULT_THREADS

    def __post_init__(self) -> None:
        check_positive_int("iterations", self.iterations)
        check_positive_int("restarts", self.restarts)
        check_positive_int("patience", self.patience, optional=True)
        check_positive_int("log_every", self.log_every, optional=True)
        if isinstance(self.lr, bool) or not isinstance(self.lr, int | float) or not self.lr > 0:
            raise FlLeakError(f"lr must be a positive number, got {self.lr!r}")
        if self.label_strategy not in LABEL_STRATEGIES:
            raise FlLeakError(
                f"label_strategy must be one of {LABEL_STRATEGIES}, got {self.label_strategy!r}"
            )
        if self.input_range is not None and not (
            len(self.input_range) == 2 and self.input_range[0] < self.input_range[1]
        ):
            raise FlLeakError(
                f"input_range must be (low, high) with low < high, got {self.input_range!r}"
            )
        check_non_negative("tolerance", self.tolerance)
        if self.callback is not None and not callable(self.callback):
            raise FlLeakError(f"callback must be callable, got {self.callback!r}")
        if self.dtype is not None:
            torch_dtype(self.dtype)
        check_threads(self.threads)


@dataclass
class MatchingProblem:
    """The server's copy of the model, the observed gradients and the labels to match with.

    ``labels`` holds the given or recovered labels, or ``None`` under ``label_strategy="joint"``.
    """

    model: nn.Module
    parameters: list[Tensor]
    observed: list[Tensor]
    batch_shape: tuple[int, ...]
    num_classes: int
    labels: Tensor | None
    label_source: str

    def trial_gradients(self, inputs: Tensor, label_logits: Tensor | None) -> list[Tensor]:
        """Gradients of the batch-mean cross-entropy at ``inputs`` (graph kept for a 2nd pass).

        With ``label_logits`` the targets are the soft labels ``softmax(label_logits)``.
        """
        outputs = self.model(inputs)
        if label_logits is None:
            assert self.labels is not None
            loss = F.cross_entropy(outputs, self.labels)
        else:
            loss = F.cross_entropy(outputs, label_logits.softmax(dim=-1))
        return list(torch.autograd.grad(loss, self.parameters, create_graph=True))


def prepare_problem(
    model: nn.Module,
    gradients: Sequence[Tensor],
    input_shape: tuple[int, ...],
    batch_size: int,
    labels: Tensor | None,
    options: MatchingOptions,
) -> MatchingProblem:
    """Validate the server's view, copy the model to the device, and settle the labels."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise FlLeakError(f"batch_size must be a positive integer, got {batch_size!r}")
    gradients = check_gradients(model, gradients)
    work = copy.deepcopy(model)  # the shape check runs the copy: BatchNorm buffers stay as they are
    num_classes = check_input_shape(work, input_shape).shape[-1]
    dtype = torch_dtype(options.dtype) if options.dtype is not None else _dtype_of(model)
    work.to(device=options.device, dtype=dtype)
    parameters: list[Tensor] = list(work.parameters())
    for parameter in parameters:
        parameter.requires_grad_(True)
    observed = [g.detach().to(device=options.device, dtype=dtype) for g in gradients]
    if labels is not None:
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        if labels.numel() != batch_size:
            raise FlLeakError(f"got {labels.numel()} labels for batch_size={batch_size}")
        source = "given"
    elif options.label_strategy == "recover":
        labels = recover_labels(model, gradients, batch_size)
        source = "recovered from the last layer's gradients"
    else:
        source = "optimised jointly (argmax of the soft labels)"
    return MatchingProblem(
        model=work,
        parameters=parameters,
        observed=observed,
        batch_shape=(batch_size, *input_shape),
        num_classes=num_classes,
        labels=None if labels is None else labels.to(options.device),
        label_source=source,
    )


def _dtype_of(model: nn.Module) -> torch.dtype:
    parameter = next(model.parameters(), None)
    return parameter.dtype if parameter is not None else torch.float32


@dataclass
class RestartResult:
    """The best iterate of one restart (inputs, then label logits if optimised) and its course."""

    best: list[Tensor]
    loss: float = math.inf
    iterations: int = 0
    early_stop: bool = False
    diverged: bool = False
    seconds: float = 0.0

    def diagnostics(self) -> RestartDiagnostics:
        """The restart's course as the result's structured record."""
        return RestartDiagnostics(
            final_objective=self.loss,
            iterations=self.iterations,
            early_stop=self.early_stop,
            diverged=self.diverged,
            seconds=self.seconds,
        )

    @property
    def inputs(self) -> Tensor:
        return self.best[0]

    @property
    def label_logits(self) -> Tensor | None:
        return self.best[1] if len(self.best) > 1 else None


class Stall:
    """Early-stop bookkeeping: no relative improvement of ``tolerance`` in ``patience`` steps."""

    def __init__(self, patience: int | None, tolerance: float) -> None:
        self.patience, self.tolerance = patience, tolerance
        self.reference, self.since = math.inf, 0

    def update(self, loss: float) -> bool:
        """Record ``loss``; True when the run has stalled."""
        if math.isinf(self.reference) or loss < self.reference - self.tolerance * abs(
            self.reference
        ):
            self.reference, self.since = loss, 0
        else:
            self.since += 1
        return self.patience is not None and self.since >= self.patience

    def restart_count(self) -> None:
        """Give the run another ``patience`` iterations (after a change of step size)."""
        self.since = 0


def run_restart(
    restart: int,
    variables: list[Tensor],
    step: Callable[[], float],
    evaluate: Callable[[], float],
    options: MatchingOptions,
    attack: str,
    on_stall: Callable[[], bool] | None = None,
) -> RestartResult:
    """Iterate ``step`` (one optimiser step; returns the objective before it) and keep the best.

    ``variables[0]`` is the input batch, ``variables[1]`` the label logits when optimised;
    ``evaluate`` gives the objective at the current iterate (used once, after the last step).
    When the objective stalls (``patience``, ``tolerance``), ``on_stall`` may react (e.g. move to
    a smaller step size) and return True to go on; otherwise the restart stops early.
    """
    start = time.perf_counter()
    stall = Stall(options.patience, options.tolerance)
    result = RestartResult(_snapshot(variables))
    iteration = 0
    for iteration in range(1, options.iterations + 1):
        before = _snapshot(variables)
        loss = step()
        if not math.isfinite(loss):
            result.diverged = True
            break
        if loss < result.loss:
            result.best, result.loss = before, loss
        if options.callback is not None:
            seconds = time.perf_counter() - start
            options.callback(Progress(restart, iteration, loss, before[0], seconds))
        if options.log_every and iteration % options.log_every == 0:
            logger.info("%s restart %d iteration %d loss %.6e", attack, restart, iteration, loss)
        if stall.update(loss):
            if on_stall is not None and on_stall():
                logger.info(
                    "%s restart %d iteration %d: stalled, next stage", attack, restart, iteration
                )
                stall.restart_count()
                continue
            result.early_stop = True
            break
    if not result.diverged:
        final = evaluate()
        if final < result.loss:
            result.best, result.loss = _snapshot(variables), final
    result.iterations = iteration
    result.seconds = time.perf_counter() - start
    logger.info(
        "%s restart %d done: %d iterations, best loss %.6e%s%s",
        attack,
        restart,
        iteration,
        result.loss,
        ", early stop" if result.early_stop else "",
        ", diverged" if result.diverged else "",
    )
    return result


def _snapshot(variables: list[Tensor]) -> list[Tensor]:
    return [v.detach().clone() for v in variables]


def random_starts(
    problem: MatchingProblem, options: MatchingOptions
) -> Iterator[tuple[int, list[Tensor]]]:
    """For each restart: its number and fresh leaf variables (inputs, and label logits if joint).

    Inputs start from a standard normal draw (projected into ``input_range`` when set), soft
    label logits from a standard normal draw; the draws are seeded by ``seed`` and the restart.
    """
    dtype = problem.observed[0].dtype
    for restart in range(1, options.restarts + 1):
        generator = torch.Generator().manual_seed(options.seed + restart - 1)
        inputs = torch.randn(problem.batch_shape, generator=generator, dtype=dtype)
        if options.input_range is not None:
            inputs = inputs.clamp(*options.input_range)
        variables = [inputs.to(options.device).requires_grad_(True)]
        if problem.labels is None:
            logits = torch.randn(
                problem.batch_shape[0], problem.num_classes, generator=generator, dtype=dtype
            )
            variables.append(logits.to(options.device).requires_grad_(True))
        yield restart, variables


def project(inputs: Tensor, input_range: tuple[float, float] | None) -> None:
    """Clamp ``inputs`` in place into ``input_range`` (no-op for ``None``)."""
    if input_range is not None:
        with torch.no_grad():
            inputs.clamp_(*input_range)


def best_reconstruction(
    attack: str,
    problem: MatchingProblem,
    results: list[RestartResult],
    seconds: float,
    recovered: bool,
) -> Reconstruction:
    """The restart with the lowest objective as a :class:`Reconstruction`: every restart's
    :class:`~fl_leak.attacks.result.RestartDiagnostics`, the best one's position, and notes."""
    best_index = min(range(len(results)), key=lambda k: results[k].loss)
    best = results[best_index]
    if best.label_logits is not None:
        labels = best.label_logits.argmax(dim=-1).cpu()
    else:
        assert problem.labels is not None
        labels = problem.labels.cpu()
    notes = [
        f"best restart {best_index + 1} of {len(results)}: final loss {best.loss:.6e}, "
        f"{best.iterations} iterations, early stop {'yes' if best.early_stop else 'no'}"
        + (", diverged (non-finite loss)" if best.diverged else ""),
        f"labels {problem.label_source}",
    ]
    notes += [
        f"restart {k + 1}: final loss {r.loss:.6e}, {r.iterations} iterations, "
        f"early stop {'yes' if r.early_stop else 'no'}"
        for k, r in enumerate(results)
        if len(results) > 1
    ]
    return Reconstruction(
        inputs=best.inputs.cpu(),
        labels=labels,
        attack=attack,
        seconds=seconds,
        labels_recovered=recovered,
        notes=notes,
        restarts=[result.diagnostics() for result in results],
        best_restart=best_index,
    )


RestartRunner = Callable[[MatchingProblem, Any, int, list[Tensor]], RestartResult]


def run_attack(
    attack: str,
    run: RestartRunner,
    model: nn.Module,
    gradients: Sequence[Tensor],
    input_shape: tuple[int, ...],
    batch_size: int,
    labels: Tensor | None,
    options: MatchingOptions,
) -> Reconstruction:
    """Set up the problem, ``run`` every restart and return the best one."""
    start = time.perf_counter()
    problem = prepare_problem(model, gradients, input_shape, batch_size, labels, options)
    return run_restarts(
        attack, run, problem, random_starts(problem, options), options, labels is None, start
    )


def run_restarts(
    attack: str,
    run: RestartRunner,
    problem: MatchingProblem,
    starts: Iterable[tuple[int, list[Tensor]]],
    options: MatchingOptions,
    recovered: bool,
    start: float,
) -> Reconstruction:
    """``run`` the restarts from ``starts`` on ``problem``; the best one as a reconstruction
    (``start``: the ``time.perf_counter()`` at which the attack began)."""
    results = [run(problem, options, restart, variables) for restart, variables in starts]
    return best_reconstruction(attack, problem, results, time.perf_counter() - start, recovered)
