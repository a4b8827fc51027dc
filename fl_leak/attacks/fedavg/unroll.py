"""The ``fedavg_unroll`` attack: optimisation through the client's unrolled local training.

After Dimitrov et al., "Data Leakage in Federated Averaging" (TMLR 2022): the unknowns are one
set of ``M`` inputs, shared by every pass (epoch) over them; the client's SGD steps are simulated
on them, differentiably, and the simulated update is matched to the observed one. The attack is
``ig`` (:mod:`fl_leak.attacks.baselines.ig`: cosine distance plus total variation, Adam, step
decay, restarts, early stop, progress) with the gradient of one batch replaced by the simulated
update of the whole schedule (:func:`~fl_leak.attacks.fedavg.schedule.simulate_update`).

Sharing the inputs between passes replaces the paper's order-invariant aggregation of per-epoch
reconstructions: which sample each step took (the shuffle of each pass) is resolved once, on a
first-order estimate (the ``linear`` solve of all samples as one batch at the sent weights), by
the order that best reproduces the update (:mod:`fl_leak.attacks.fedavg.order`); with
``start="first_order"`` the first restart also starts from that estimate, and its labels are
used. A model the linear solve cannot read keeps the identity order (noted).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from fl_leak.attacks.baselines.common import (
    MatchingProblem,
    prepare_problem,
    random_starts,
    run_restarts,
)
from fl_leak.attacks.baselines.ig import IGOptions, ig_restart
from fl_leak.attacks.fedavg.order import best_order
from fl_leak.attacks.fedavg.schedule import (
    Order,
    Schedule,
    ScheduleOptions,
    relative_distance,
    simulate_update,
)
from fl_leak.attacks.linear.attack import LinearOptions, linear_attack
from fl_leak.attacks.registry import register_attack
from fl_leak.attacks.result import Reconstruction, TrajectoryDiagnostics
from fl_leak.errors import FlLeakError
from fl_leak.options import check_one_of

STARTS = ("first_order", "random")


@dataclass(frozen=True)
class FedAvgUnrollOptions(IGOptions, ScheduleOptions):
    """Options of ``fedavg_unroll``: ``ig``'s (:class:`~fl_leak.attacks.baselines.ig.IGOptions`,
    same meaning), the client's schedule (``local_lr``, ``local_steps``, ``local_batch_size``,
    ``local_epochs``) and ``start``: ``"first_order"`` (the first restart starts from the linear
    solve of all samples as one batch; later restarts are random) or ``"random"``.

    Defaults differ from ``ig``'s where the start is already close: 2,000 iterations, step size
    0.01, no total variation.
    """

    iterations: int = 2000
    lr: float = 0.01
    tv_weight: float = 0.0
    log_every: int | None = 500
    start: str = "first_order"

    def __post_init__(self) -> None:
        IGOptions.__post_init__(self)
        self.check_schedule()
        check_one_of("start", self.start, STARTS)


@dataclass
class UnrolledProblem(MatchingProblem):
    """The matching problem whose trial "gradients" are the simulated update of the schedule."""

    schedule: Schedule | None = None
    order: Order = ()

    def trial_gradients(self, inputs: Tensor, label_logits: Tensor | None) -> list[Tensor]:
        """The update (gradient units) of the client's SGD on ``inputs`` in ``order``."""
        assert self.schedule is not None
        targets = self.labels if label_logits is None else label_logits.softmax(dim=-1)
        assert targets is not None
        return simulate_update(
            self.model, inputs, targets, self.schedule, self.order, create_graph=True
        )

    def residual(self, inputs: Tensor, targets: Tensor, order: Order) -> float:
        """Update-reproduction residual of ``inputs`` trained on in ``order``."""
        assert self.schedule is not None
        simulated = simulate_update(self.model, inputs, targets, self.schedule, order)
        return relative_distance([s.detach() for s in simulated], self.observed)


def _first_order(
    model: nn.Module,
    gradients: Sequence[Tensor],
    input_shape: tuple[int, ...],
    batch_size: int,
    labels: Tensor | None,
    options: FedAvgUnrollOptions,
) -> Reconstruction | None:
    """The linear solve of all samples as one batch, or None where the model is no chain."""
    # the schedule gives the update's scale: no scale is fitted (as in fedavg_hybrid)
    linear = LinearOptions(threads=options.threads, device=options.device, free_scale=False)
    try:
        return linear_attack(model, gradients, input_shape, batch_size, labels, linear)
    except FlLeakError:
        return None


@register_attack("fedavg_unroll", FedAvgUnrollOptions)
def fedavg_unroll_attack(
    model: nn.Module,
    gradients: Sequence[Tensor],
    input_shape: tuple[int, ...],
    batch_size: int,
    labels: Tensor | None,
    options: FedAvgUnrollOptions,
) -> Reconstruction:
    """Match the simulated update of the client's local training (module docstring).

    ``gradients``: the update in gradient units, ``(w_sent - w_returned) / (local_lr * steps)``;
    ``batch_size``: the number of distinct samples trained on. Works on any differentiable model.
    Options: the fields of :class:`FedAvgUnrollOptions`; progress (``callback``, ``log_every``)
    and early stop (``patience``, ``tolerance``) as for ``ig``.
    """
    start_time = time.perf_counter()
    recovered = labels is None
    first = _first_order(model, gradients, input_shape, batch_size, labels, options)
    if labels is None and first is not None and options.label_strategy == "recover":
        labels = first.labels
    base = prepare_problem(model, gradients, input_shape, batch_size, labels, options)
    schedule = options.schedule(batch_size)
    problem = UnrolledProblem(**vars(base), schedule=schedule, order=schedule.identity())
    notes = []
    search = None
    if first is not None and problem.labels is not None:
        estimate = first.inputs.to(problem.observed[0])
        targets = problem.labels

        def residual(order: Order) -> float:
            return problem.residual(estimate, targets, order)

        search = best_order(schedule, residual)
        problem.order = search.order
    else:
        notes.append("order not searched: identity order (no first-order estimate or labels)")

    def starts() -> Iterator[tuple[int, list[Tensor]]]:
        for restart, variables in random_starts(problem, options):
            if restart == 1 and options.start == "first_order" and first is not None:
                begin = first.inputs.to(variables[0])
                if options.input_range is not None:
                    begin = begin.clamp(*options.input_range)
                variables[0] = begin.requires_grad_(True)
            yield restart, variables

    result = run_restarts(
        "fedavg_unroll",
        ig_restart,
        problem,
        starts(),
        options,
        recovered,
        start_time,
    )
    targets = problem.labels if problem.labels is not None else result.labels
    final = problem.residual(result.inputs.to(problem.observed[0]), targets, problem.order)
    best = result.restarts[result.best_restart or 0]
    initial = [search.residual] if search is not None else []
    result.notes += [*notes, f"update residual at the end: {final:.3e}"]
    result.trajectory = TrajectoryDiagnostics(
        iterations=best.iterations,
        residuals=[*initial, final],
        order=[list(visit) for visit in problem.order],
        orders_evaluated=search.evaluated if search is not None else 0,
        converged=best.early_stop,
    )
    return result
