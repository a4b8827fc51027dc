"""Least-squares solve of one layer's system, matrix-free, with scipy's LSMR."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy.sparse.linalg import lsmr, svds
from threadpoolctl import threadpool_limits
from torch import Tensor

from fl_leak.attacks.linear.preconditioner import torch_solve
from fl_leak.attacks.linear.system import LayerSystem

LSMR_STOP_REASONS = {
    0: "x = 0 solves the system",
    1: "residual below tolerance (consistent system)",
    2: "least-squares optimality below tolerance",
    3: "condition estimate above limit",
    4: "residual at machine precision",
    5: "least-squares optimality at machine precision",
    6: "condition estimate at machine precision",
    7: "iteration limit reached",
}


@dataclass
class SolveReport:
    """How a layer's least-squares solve stopped."""

    iterations: int
    stop_reason: str
    residual: float  # ||U x - V|| / ||V|| on the scaled system
    condition_estimate: float  # LSMR's running estimate of cond(U); nan for CGLS
    seconds: float
    method: str = "LSMR"  # or "preconditioned CGLS", "CGLS" (fl_leak.attacks.linear.cgls)


SOLVE_METHODS = ("auto", "lsmr", "cgls")


@dataclass(frozen=True)
class SolverOptions:
    """Solver settings: ``tolerance`` is used as both ``atol`` and ``btol``.

    ``method``: "auto" solves a full-rank convolution layer by CGLS preconditioned with its
    normal matrix (:mod:`fl_leak.attacks.linear.preconditioner`) where that applies and is cheap
    enough, and every other system by scipy's LSMR; "lsmr" always uses LSMR; "cgls" always uses
    the torch-native CGLS, preconditioned wherever the preconditioner applies whatever its setup
    cost (no host round trips on a GPU, where that setup is cheap).

    Torch's thread count is not set here: the attack or audit that runs the solve sets it for its
    whole call (the ``threads`` option, :mod:`fl_leak.threads`). LSMR's own vector updates always
    run on one BLAS thread (see ``solve_layer``).
    """

    tolerance: float = 1e-10
    max_iterations: int = 20_000
    method: str = "auto"


def solve_layer(
    system: LayerSystem,
    options: SolverOptions = SolverOptions(),
    rhs: Tensor | None = None,
    damp: float = 0.0,
) -> tuple[Tensor, SolveReport]:
    """Minimum-norm least-squares solution of ``system`` and a report of the solve.

    The method follows ``options.method`` (:class:`SolverOptions`); a damped solve always uses
    LSMR.

    numpy's BLAS is held to one thread: LSMR's vector updates are small, and a multi-threaded
    BLAS pool spinning between torch's multi-threaded convolutions makes each iteration tens of
    times slower (measured: 3x224x224 system, 2 torch threads, 15 s against several minutes).
    ``rhs`` replaces the system's own right-hand side (already scaled like the rows); ``damp``
    (``lambda``) solves ``min ||U x - V||^2 + lambda^2 ||x||^2`` instead (Tikhonov).
    """
    start = time.perf_counter()
    if damp == 0 and options.method != "lsmr":
        target = (system.rhs() if rhs is None else rhs).detach()
        solved = torch_solve(
            system, target, options.tolerance, options.max_iterations, options.method == "auto"
        )
        if solved is not None:
            x = solved.result.solution
            return x, SolveReport(
                iterations=solved.result.iterations,
                stop_reason=LSMR_STOP_REASONS[solved.result.stop_code],
                residual=system.relative_residual(x),
                condition_estimate=float("nan"),
                seconds=time.perf_counter() - start,
                method=solved.method,
            )
    operator = system.as_scipy()
    vector = (system.rhs() if rhs is None else rhs).detach().cpu().double().numpy()
    with threadpool_limits(limits=1, user_api="blas"):
        result = lsmr(
            operator,
            vector,
            atol=options.tolerance,
            btol=options.tolerance,
            conlim=1e16,
            maxiter=options.max_iterations,
            damp=damp,
        )
    solution, istop, iterations = result[0], int(result[1]), int(result[2])
    x = torch.from_numpy(np.asarray(solution)).to(system.target).reshape(system.unknown_shape)
    report = SolveReport(
        iterations=iterations,
        stop_reason=LSMR_STOP_REASONS.get(istop, str(istop)),
        residual=system.relative_residual(x),
        condition_estimate=float(result[6]),
        seconds=time.perf_counter() - start,
    )
    return x, report


def largest_singular_value(system: LayerSystem, seed: int = 0) -> float:
    """The largest singular value of ``U`` (scaled rows), by ARPACK on the matrix-free operator."""
    with threadpool_limits(limits=1, user_api="blas"):
        values = svds(
            system.as_scipy(), k=1, tol=1e-3, random_state=seed, return_singular_vectors=False
        )
    return float(values[0])


def _random_probe(system: LayerSystem, seed: int) -> Tensor:
    """A seeded standard Gaussian vector of the system's unknown shape, on its device."""
    generator = torch.Generator().manual_seed(seed)
    probe = torch.randn(system.unknown_shape, generator=generator, dtype=torch.float64)
    return probe.to(system.target)


def _unrecovered(probe: Tensor, recovered: Tensor) -> float:
    return float((recovered - probe).norm() / probe.norm())


def null_space_share(
    system: LayerSystem, options: SolverOptions = SolverOptions(), seed: int = 0, rtol: float = 0.0
) -> float:
    """The share of a random vector's norm that the solve cannot recover: 0 at full column rank.

    LSMR started from zero stays in the row space of ``U``, so on the consistent system
    ``U x = U r`` it returns the projection of ``r`` onto that space; ``||r - x|| / ||r||`` is
    about ``sqrt(deficiency / unknowns)`` where ``U`` has a null space, structural or numerical
    (dependent rows that no count of equations reveals), and at the solve's tolerance otherwise.
    Directions too ill-conditioned for the solve to resolve count as missing, as they should.

    With ``rtol > 0`` the solve is damped by ``lambda = rtol * s_max``: a direction of singular
    value ``s`` is then recovered in the share ``s^2 / (s^2 + lambda^2)``, so the squared share
    times the unknowns counts the singular values below ``lambda`` (see :func:`weak_directions`),
    and the solve converges in a bounded number of iterations (condition about ``1 / rtol``).
    """
    probe = _random_probe(system, seed)
    damp = rtol * largest_singular_value(system, seed) if rtol > 0 else 0.0
    # LSMR's iterates stay in the row space of U, which the share relies on
    lsmr_options = replace(options, method="lsmr")
    recovered, _ = solve_layer(system, lsmr_options, rhs=system.apply(probe), damp=damp)
    return _unrecovered(probe, recovered)


def recovery_share(
    system: LayerSystem, options: SolverOptions = SolverOptions(), seed: int = 0
) -> tuple[float, str]:
    """The share of a random vector ``r`` that the solve of ``options.method`` does not recover
    from ``U r``, and that solve's method: a certificate of full column rank where small.

    Like :func:`null_space_share` (the same probe), but by the layer's own solve: on a
    full-rank convolution layer, CGLS preconditioned by its normal matrix, whose preconditioner
    the layer's solve has already built (a few iterations instead of LSMR's hundreds). Any solve
    sees ``r`` only through ``U r``, so its error in the null space of ``U`` is ``x_N - r_N``,
    with ``x_N`` independent of the Gaussian ``r_N``: never more likely small than ``r_N``
    itself, the minimum-norm error (Anderson's inequality). A share below a threshold therefore
    certifies full rank as surely as :func:`null_space_share`'s; above it, the share may exceed
    that function's (a preconditioned solve leaves the row space), which then gives the
    null space's own share.
    """
    probe = _random_probe(system, seed)
    recovered, report = solve_layer(system, options, rhs=system.apply(probe))
    return _unrecovered(probe, recovered), report.method


def weak_directions(
    system: LayerSystem,
    rtol: float,
    options: SolverOptions = SolverOptions(tolerance=1e-8, max_iterations=50_000),
    seed: int = 0,
) -> int:
    """Estimated number of singular values of ``U`` below ``rtol`` times the largest.

    One Gaussian probe of the damped solve (:func:`null_space_share`): the expected squared
    share is ``sum_i (lambda^2 / (s_i^2 + lambda^2))^2 / n``, which counts each singular value well
    below ``lambda`` as one and each well above as zero; a single probe estimates a count ``d``
    to about ``sqrt(2 d)``. Directions the solve leaves unresolved at its iteration limit count as
    weak.
    """
    share = null_space_share(system, options, seed, rtol=rtol)
    return round(share**2 * system.num_unknowns)
