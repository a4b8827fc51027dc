"""The system of a block that max-pools, and the search for the positions of its window maxima.

Walking down, the layer above gives the block's pooled output and the gradient at it; which entry
of each window was the maximum is unknown. Given positions, the block is linear: its forward rows
are those of ``z`` at the chosen entries (``z = s^{-1}(pooled)`` where the activation inverts) and
its output gradient is the pooled one scattered to them (ReLU's active set plays the same part).
The search starts from the first entry of every window, solves, re-reads each window's maximum
from the solution's own ``z = A x + b``, and repeats until the positions reproduce themselves (a
fixed point: every window's maximum where the system put it) or ``rounds`` run out. A fixed point
can be false (consistent positions, a residual left): then the search starts again from seeded
random positions, up to ``restarts`` times, and keeps the solve of lowest residual over all.
Only windows that carry a forward row or a non-zero gradient count: a ReLU window whose output is
0 constrains nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from fl_leak.attacks.linear.activations import Inversion
from fl_leak.attacks.linear.chain import Block
from fl_leak.attacks.linear.solver import SolveReport, SolverOptions, solve_layer
from fl_leak.attacks.linear.system import LayerSystem

# a consistent set of positions whose solve leaves a larger relative residual is a false fixed point
SETTLED_RESIDUAL = 1e-6


@dataclass(frozen=True)
class PoolingReport:
    """How the positions of a pooling block's maxima were settled."""

    windows: int  # windows with a forward row or a non-zero output gradient
    consistent: int  # of those, windows whose solution has its maximum at the chosen position
    rounds: int  # solves run, over all starts; the one of lowest residual is kept
    residual: float  # relative residual of the kept solve

    @property
    def settled(self) -> bool:
        """Every window consistent and the system solved: positions that explain the data."""
        return self.consistent == self.windows and self.residual <= SETTLED_RESIDUAL


def pooled_system(
    block: Block, positions: Tensor, inversion: Inversion, pooled_gradient: Tensor
) -> LayerSystem:
    """The block's system with the maxima at ``positions`` (``(B, *pooled shape)``)."""
    pool = block.pool
    assert pool is not None
    dtype = pooled_gradient.dtype
    claims = pool.scatter(torch.ones_like(pooled_gradient), positions)
    # overlapping windows may pick the same entry: its forward row takes their mean value
    target = pool.scatter(inversion.pre_activation, positions) / claims.clamp_min(1)
    valid = pool.scatter(inversion.valid.to(dtype), positions) > 0
    bias = block.operator.add_bias(target.new_zeros(1, *block.operator.out_shape))
    return LayerSystem(
        operator=block.operator,
        output_gradient=pool.scatter(pooled_gradient, positions),
        observed_gradient=block.weight_gradient,
        target=target - bias,
        valid=valid,
    )


def solve_pooled(
    block: Block,
    inversion: Inversion,
    pooled_gradient: Tensor,
    options: SolverOptions,
    rounds: int,
    restarts: int = 0,
    seed: int = 0,
) -> tuple[Tensor, LayerSystem, SolveReport, PoolingReport]:
    """Solve a pooling block for its input while settling the positions (module docstring).

    ``inversion`` and ``pooled_gradient`` are at the block's pooled output: its inverted
    activation and ``dL/dz`` at the pooled entries.
    """
    pool = block.pool
    assert pool is not None
    relevant = inversion.valid | (pooled_gradient != 0)
    windows = int(relevant.sum())
    batch = pooled_gradient.shape[0]
    generator = torch.Generator().manual_seed(seed)
    best: tuple[Tensor, LayerSystem, SolveReport, PoolingReport] | None = None
    solves = 0
    for start in range(restarts + 1):
        if start == 0:
            probe = pooled_gradient.new_zeros(batch, *pool.in_shape)  # ties: the first entry
        else:
            probe = torch.rand((batch, *pool.in_shape), generator=generator).to(pooled_gradient)
        positions = pool.positions(probe)
        for _ in range(rounds):
            solves += 1
            system = pooled_system(block, positions, inversion, pooled_gradient)
            x, report = solve_layer(system, options)
            found = pool.positions(block.operator.add_bias(block.operator.forward(x)))
            consistent = int((relevant & (found == positions)).sum())
            if best is None or report.residual < best[2].residual:
                best = (x, system, report, PoolingReport(windows, consistent, 0, report.residual))
            if consistent == windows:
                break
            positions = torch.where(relevant, found, positions)
        assert best is not None
        if best[3].settled:
            break
    assert best is not None
    x, system, report, pooling = best
    return x, system, report, replace(pooling, rounds=solves)
