"""Which sample each local step trained on: the order that best reproduces the update.

The samples of one batch enter its step through their mean, so only the partition of each pass
into batches matters; to second order in the learning rate that partition changes the update
(the weights move between steps). Given candidate samples, :func:`best_order` searches the
orders by the update they reproduce: every order of a single short pass, else (or from a given
start) pairwise swaps between the batches of a pass, best improvement first, until none improves.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

from fl_leak.attacks.fedavg.schedule import Order, Schedule

EXHAUSTIVE_LIMIT = 720  # orders of a single pass tried one by one (6 samples of one per batch)


@dataclass(frozen=True)
class OrderSearch:
    """The best order found, its residual, and how many orders were evaluated."""

    order: Order
    residual: float
    evaluated: int


def _distinct_orders(schedule: Schedule) -> int:
    """Partitions of one pass into its batches (orders that give different updates)."""
    full, rest = divmod(schedule.samples, schedule.batch)
    sizes = [schedule.batch] * full + ([rest] if rest else [])
    count = math.factorial(schedule.samples)
    for size in sizes:
        count //= math.factorial(size)
    return count


def best_order(
    schedule: Schedule, residual: Callable[[Order], float], start: Order | None = None
) -> OrderSearch:
    """The order (one visit of the samples per pass) whose simulated update is closest to the
    observed one, by ``residual(order)``. Without ``start`` every order of a single short pass is
    tried; with it (or for longer schedules) swaps improve the order from there (the identity
    without ``start``)."""
    if schedule.steps == 1 or schedule.batch == schedule.samples:
        order = schedule.identity() if start is None else start
        return OrderSearch(order, residual(order), 1)  # every order gives the same update
    if start is not None:
        return _swaps(schedule, residual, start)
    orders = distinct_orders(schedule)
    if orders is not None:
        return _exhaustive(orders, residual)
    return _swaps(schedule, residual, schedule.identity())


def distinct_orders(schedule: Schedule, limit: int = EXHAUSTIVE_LIMIT) -> list[Order] | None:
    """Every order of a single pass that gives a distinct update (one per partition into its
    batches), or None when there are more than ``limit`` or several passes."""
    if schedule.passes != 1 or _distinct_orders(schedule) > limit:
        return None
    orders: list[Order] = []
    seen: set[tuple[frozenset[int], ...]] = set()
    for visit in itertools.permutations(range(schedule.samples)):
        batches = tuple(
            frozenset(visit[k : k + schedule.batch])
            for k in range(0, schedule.samples, schedule.batch)
        )
        if batches not in seen:
            seen.add(batches)
            orders.append((visit,))
    return orders


def _exhaustive(orders: list[Order], residual: Callable[[Order], float]) -> OrderSearch:
    values = [residual(order) for order in orders]
    best = min(range(len(orders)), key=values.__getitem__)
    return OrderSearch(orders[best], values[best], len(orders))


def _swaps(schedule: Schedule, residual: Callable[[Order], float], order: Order) -> OrderSearch:
    current, evaluated = residual(order), 1
    improved = True
    while improved:
        improved = False
        best_move: tuple[float, Order] | None = None
        for visit_index, visit in enumerate(order):
            for i, j in itertools.combinations(range(schedule.samples), 2):
                if i // schedule.batch == j // schedule.batch:
                    continue  # a swap inside one batch changes nothing
                swapped = list(visit)
                swapped[i], swapped[j] = swapped[j], swapped[i]
                candidate = (*order[:visit_index], tuple(swapped), *order[visit_index + 1 :])
                value = residual(candidate)
                evaluated += 1
                if value < current and (best_move is None or value < best_move[0]):
                    best_move = (value, candidate)
        if best_move is not None:
            current, order = best_move
            improved = True
    return OrderSearch(order, current, evaluated)
