"""The ``fedavg_hybrid`` attack: the linear/hybrid solve, corrected for the client's trajectory.

A FedAvg client's update (in gradient units) is ``u(x) = sum_s grad L_s(w_s; x_s) / S``, with
``w_{s+1} = w_s - lr grad L_s(w_s; x_s)``; the batch attack assumes ``g(x) = grad L(w_0; x)``, the
batch-mean gradient of all ``M`` samples at the sent weights, which ``u`` equals to first order in
the learning rate (for equal batches). The attack solves the fixed point

    x = solve(u_obs - [u(x) - g(x)])

from the first-order estimate ``x = solve(u_obs)``: at the true samples the corrected target is
exactly ``g(x)``, the gradient the batch solve inverts. Each iteration simulates the trajectory of
the current estimate in the order that best reproduces the observed update
(:mod:`fl_leak.attacks.fedavg.order`), re-solves with the correction (labels kept from the first
solve), matches the new samples to the previous ones, and takes the next estimate from an
Anderson extrapolation of the iterates (:mod:`fl_leak.attacks.fedavg.anderson`). It stops when
the update-reproduction residual reaches ``trajectory_tolerance`` or has not fallen by a tenth
for ``STALL`` iterations, and returns the estimate with the lowest residual.

Near the truth the map's derivative is ``-lr * solve'(g) * (second-order terms)``: where the batch
solve amplifies errors (a square, ill-conditioned layer such as cnn2_c5's), it is no contraction
at the client's learning rate from the first-order estimate. With ``lr_stages`` = ``K`` > 1 the
fixed point is continued in the learning rate: stage ``k`` simulates the trajectory at
``lr * k / K`` for ``stage_iterations`` iterations, from the previous stage's estimate, in the
order chosen on the first-order estimate (at a fraction of the rate the orders' residuals barely
differ), and the last stage, at the client's rate, searches the order and runs to the stopping
rules above. Where the plain fixed point (``lr_stages=1``) does not reach the tolerance, it is run
again continued over ``retry_stages`` stages without Anderson acceleration, and the better
estimate is kept.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from fl_leak.attacks.fedavg.anderson import Anderson
from fl_leak.attacks.fedavg.order import OrderSearch, best_order, distinct_orders
from fl_leak.attacks.fedavg.schedule import (
    Order,
    Schedule,
    ScheduleOptions,
    batch_gradient,
    relative_distance,
    simulate_update,
)
from fl_leak.attacks.linear.attack import check_chain
from fl_leak.attacks.linear.chain import parse_chain
from fl_leak.attacks.linear.hybrid import HybridOptions, hybrid_attack
from fl_leak.attacks.linear.last_layer import solve_last_layer
from fl_leak.attacks.linear.walk import last_layer_of
from fl_leak.attacks.registry import register_attack
from fl_leak.attacks.result import Reconstruction, TrajectoryDiagnostics
from fl_leak.errors import FlLeakError
from fl_leak.options import (
    check_non_negative,
    check_non_negative_int,
    check_positive_int,
    torch_device,
    torch_dtype,
)

STALL = 3  # iterations without progress that end the fixed point
PROGRESS = 0.9  # progress: the best residual falls by this factor at least
CONSISTENCY_LIMIT = 120  # orders whose corrected targets are judged one by one (5 samples)


@dataclass(frozen=True)
class FedAvgHybridOptions(HybridOptions, ScheduleOptions):
    """Options of ``fedavg_hybrid``: ``hybrid``'s (:class:`HybridOptions`), the client's schedule
    (:class:`~fl_leak.attacks.fedavg.schedule.ScheduleOptions`: ``local_lr``, ``local_steps``,
    ``local_batch_size``, ``local_epochs``), and the fixed point's ``trajectory_iterations``
    (re-solves at the client's rate, after the first-order one or the earlier stages, >= 0),
    ``trajectory_tolerance`` (residual at which it stops), ``damping`` (share of each re-solve's
    move taken, in (0, 1]), ``anderson_memory`` (iterates the Anderson acceleration extrapolates
    from; 0: plain damped iteration), ``lr_stages`` (stages of the continuation in the learning
    rate; 1: none), ``stage_iterations`` (iterations of each stage before the last) and
    ``retry_stages`` (where the fixed point without continuation does not reach the tolerance, it
    is run again from the first-order estimate, continued over this many stages without Anderson
    acceleration, and the better estimate kept; 0 or 1: no second run). ``tikhonov_weight``
    defaults to 0 here: a FedAvg drift is not random noise, and the Tikhonov solve's bias moves
    the fixed point (cnn2_c5, 4 steps at lr 0.01: 52-55 dB with it, every image above 60 dB
    with the discrepancy-stopped solve). ``free_scale`` defaults to False: the schedule gives
    the update's scale (learning rate and steps), and what is left of a first-order estimate's
    misfit is the drift the fixed point models."""

    tikhonov_weight: float = 0.0
    free_scale: bool = False
    trajectory_iterations: int = 30
    trajectory_tolerance: float = 1e-9
    damping: float = 1.0
    anderson_memory: int = 5
    lr_stages: int = 1
    stage_iterations: int = 3
    retry_stages: int = 10

    def __post_init__(self) -> None:
        HybridOptions.__post_init__(self)
        self.check_schedule()
        check_positive_int("lr_stages", self.lr_stages)
        check_positive_int("stage_iterations", self.stage_iterations)
        check_non_negative_int("retry_stages", self.retry_stages)
        check_non_negative_int("trajectory_iterations", self.trajectory_iterations)
        check_non_negative("trajectory_tolerance", self.trajectory_tolerance)
        check_non_negative_int("anderson_memory", self.anderson_memory)
        if not (isinstance(self.damping, int | float) and 0 < self.damping <= 1):
            raise FlLeakError(f"damping must be in (0, 1], got {self.damping!r}")


def match_samples(new: Tensor, old: Tensor, labels: Tensor) -> Tensor:
    """``new``'s samples reordered to line up with ``old``'s (same labels row by row; the batch
    solve may return samples of one class in any order)."""
    cost = torch.cdist(new.flatten(1).double(), old.flatten(1).double()).cpu()
    cost = torch.where(labels[:, None] == labels[None, :], cost, torch.inf)
    rows, columns = linear_sum_assignment(cost.numpy())
    permutation = torch.empty(len(labels), dtype=torch.long)
    permutation[torch.from_numpy(columns)] = torch.from_numpy(rows)
    return new[permutation]


@dataclass
class _Fit:
    """The estimate with the lowest residual so far, and the fixed point's course."""

    inputs: Tensor
    search: OrderSearch
    residuals: list[float]
    evaluated: int = 0
    since_best: int = 0

    def add(self, inputs: Tensor, search: OrderSearch) -> None:
        self.residuals.append(search.residual)
        self.evaluated += search.evaluated
        improved = search.residual < PROGRESS * self.search.residual
        self.since_best = 0 if improved else self.since_best + 1
        if search.residual < self.search.residual:
            self.inputs, self.search = inputs, search

    def stalled(self) -> bool:
        """Whether the last ``STALL`` iterations all failed to lower the best residual by the
        factor ``PROGRESS``."""
        return self.since_best >= STALL


def last_layer_residual(
    model: nn.Module, gradients: list[Tensor], input_shape: tuple[int, ...], labels: Tensor
) -> float:
    """Residual of the last layer's solve for ``gradients``: how far they are from the gradients
    of any batch with these labels at the last layer."""
    chain = parse_chain(model, gradients, input_shape, gradients[0].dtype, gradients[0].device)
    return solve_last_layer(last_layer_of(chain), labels).residual


def _first_order(
    schedule: Schedule,
    estimate: Tensor,
    residual: Callable[[Tensor, Order], float],
    corrected: Callable[[Tensor, Order], list[Tensor]],
    consistency: Callable[[list[Tensor]], float],
) -> OrderSearch:
    """The order to start the fixed point with, from the first-order estimate.

    The first-order estimate fits the update as one batch, so its simulated update is closest in
    the order whose trajectory moves least, not in the client's. Where the orders are few, each
    is judged instead by how consistent its corrected target is (``consistency``: the last
    layer's residual); else the update residual's search runs.
    """
    orders = distinct_orders(schedule, CONSISTENCY_LIMIT)
    if schedule.steps == 1 or orders is None or len(orders) == 1:
        return best_order(schedule, partial(residual, estimate))
    scores = [consistency(corrected(estimate, order)) for order in orders]
    chosen = orders[min(range(len(orders)), key=scores.__getitem__)]
    return OrderSearch(chosen, residual(estimate, chosen), len(orders))


@register_attack("fedavg_hybrid", FedAvgHybridOptions, accepts=check_chain)
def fedavg_hybrid_attack(
    model: nn.Module,
    gradients: Sequence[Tensor],
    input_shape: tuple[int, ...],
    batch_size: int,
    labels: Tensor | None,
    options: FedAvgHybridOptions,
) -> Reconstruction:
    """Reconstruct every sample of a FedAvg client's local training (module docstring).

    ``gradients``: the update in gradient units, ``(w_sent - w_returned) / (local_lr * steps)``;
    ``batch_size``: the number of distinct samples trained on. Options: the fields of
    :class:`FedAvgHybridOptions`. ``trajectory`` of the result reports the iterations, the
    residual after each and the order found.
    """
    schedule = options.schedule(batch_size)
    dtype, device = torch_dtype(options.dtype), torch_device(options.device)
    work = copy.deepcopy(model).to(dtype=dtype, device=device)
    observed = [g.detach().to(dtype=dtype, device=device) for g in gradients]
    first = hybrid_attack(model, observed, input_shape, batch_size, labels, options)
    # the re-solves keep the first solve's choice (and skip its rank probes)
    resolve = replace(options, correct="always" if first.layers[0].corrected else "never")
    labels = first.labels.to(device)
    estimate = first.inputs.to(dtype=dtype, device=device)

    def residual(inputs: Tensor, order: Order, at: Schedule = schedule) -> float:
        simulated = simulate_update(work, inputs, labels, at, order)
        return relative_distance(simulated, observed)

    def corrected(inputs: Tensor, order: Order, at: Schedule = schedule) -> list[Tensor]:
        """The target of the next solve: the update less the trajectory's correction."""
        simulated = simulate_update(work, inputs, labels, at, order)
        linear = batch_gradient(work, inputs, labels)
        return [o - (s - g) for o, s, g in zip(observed, simulated, linear, strict=True)]

    search = _first_order(
        schedule,
        estimate,
        residual,
        corrected,
        lambda target: last_layer_residual(model, target, input_shape, labels),
    )
    fit = _Fit(estimate, search, [search.residual], search.evaluated)
    notes = [*first.notes, f"first-order estimate: all {batch_size} samples as one batch"]

    def fixed_point(stages: int, memory: int) -> int:
        """Run the fixed point (continued over ``stages``) from the first-order estimate, keeping
        the best estimate in ``fit``; returns the iterations it took."""
        current, order, iterations = estimate, search.order, 0
        for stage in range(1, stages + 1):
            staged = replace(schedule, lr=schedule.lr * stage / stages)
            last = stage == stages
            acceleration = Anderson(memory, options.damping)
            fit.since_best = 0
            for _ in range(options.trajectory_iterations if last else options.stage_iterations):
                if last and (fit.search.residual <= options.trajectory_tolerance or fit.stalled()):
                    break
                iterations += 1
                target = corrected(current, order, staged)
                solved = hybrid_attack(
                    model, target, input_shape, batch_size, labels.cpu(), resolve
                )
                moved = match_samples(solved.inputs.to(current), current, labels)
                current = acceleration.step(current, moved)
                if last:
                    found = best_order(schedule, partial(residual, current), order)
                    order = found.order
                else:  # at a fraction of the rate the orders barely differ: the order is kept
                    found = OrderSearch(order, residual(current, order), 1)
                fit.add(current, found)
        return iterations

    # one step: the update is the batch gradient itself, nothing to correct
    stages = options.lr_stages if schedule.steps > 1 else 0
    iteration = fixed_point(stages, options.anderson_memory)
    if stages > 1:
        notes.append(
            f"continued in the learning rate over {stages} stages of "
            f"{options.stage_iterations} iterations"
        )
    if (
        stages == 1
        and options.retry_stages > 1
        and fit.search.residual > options.trajectory_tolerance
    ):
        notes.append(
            f"not converged at the client's rate (residual {fit.search.residual:.3e}): run again, "
            f"continued over {options.retry_stages} stages without Anderson acceleration"
        )
        iteration += fixed_point(options.retry_stages, 0)
    converged = fit.search.residual <= options.trajectory_tolerance
    notes.append(
        f"trajectory fixed point: {iteration} iterations, update residual "
        f"{fit.residuals[0]:.3e} -> {fit.search.residual:.3e}"
        + ("" if converged else f" (tolerance {options.trajectory_tolerance:g} not reached)")
    )
    return Reconstruction(
        inputs=fit.inputs.detach().cpu(),
        labels=labels.cpu(),
        layers=first.layers,
        attack="fedavg_hybrid",
        labels_recovered=first.labels_recovered,
        notes=notes,
        trajectory=TrajectoryDiagnostics(
            iterations=iteration,
            residuals=fit.residuals,
            order=[list(visit) for visit in fit.search.order],
            orders_evaluated=fit.evaluated,
            converged=converged,
        ),
    )
