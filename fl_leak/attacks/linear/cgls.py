"""Preconditioned CGLS in torch: the least-squares solve on the system's own device.

Conjugate gradients on the normal equations ``U^T U x = U^T V``, applied through ``U`` and
``U^T`` (never forming ``U^T U``), with a symmetric positive definite preconditioner ``M^-1`` that
approximates ``(U^T U)^-1``. The stopping rules are LSMR's (``atol`` = ``btol`` = tolerance):
stop when ``||r|| <= tol (||V|| + ||U|| ||x||)`` (a consistent system solved) or
``||U^T r|| <= tol ||U|| ||r||`` (least-squares optimality), with ``||U||`` the Frobenius norm
estimated from random probes, as LSMR's own estimate is a Frobenius norm too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from fl_leak.attacks.linear.system import LayerSystem

Preconditioner = Callable[[Tensor], Tensor]


@dataclass
class CglsResult:
    """The solution and how the iteration stopped (LSMR's ``istop`` codes 1, 2 and 7)."""

    solution: Tensor
    iterations: int
    stop_code: int


def frobenius_estimate(system: LayerSystem, probes: int = 8, seed: int = 0) -> float:
    """``||U||_F`` from ``E ||U z||^2 = ||U||_F^2`` over Rademacher vectors ``z``."""
    generator = torch.Generator().manual_seed(seed)
    total = 0.0
    for _ in range(probes):
        signs = torch.randint(0, 2, system.unknown_shape, generator=generator) * 2 - 1
        z = signs.to(dtype=system.target.dtype, device=system.target.device)
        total += float(system.apply(z).square().sum())
    return (total / probes) ** 0.5


def cgls(
    system: LayerSystem,
    rhs: Tensor,
    tolerance: float,
    max_iterations: int,
    precondition: Preconditioner | None = None,
    damp: float = 0.0,
    checkpoint: tuple[int, float] | None = None,
) -> CglsResult:
    """Solve ``min ||U x - rhs||^2 + damp ||x||^2`` from ``x = 0`` by (preconditioned) CGLS.

    With ``damp > 0`` the preconditioner approximates ``(U^T U + damp I)^-1`` and the
    optimality rule applies to the damped gradient ``U^T r - damp x``. ``checkpoint``
    ``(k, f)`` gives up early (stop code 7, as at the iteration limit) where after ``k``
    iterations neither rule is near: the optimality ratio ``||U^T r|| / (||U|| ||r||)`` is
    above ``f`` times its start and the residual above ``1 / f^2`` times the first rule's
    bound. A preconditioner that far from the system's normal matrix will not converge soon.
    """
    identity: Preconditioner = lambda v: v  # noqa: E731
    apply_inverse = precondition or identity
    norm_u = frobenius_estimate(system)
    norm_b = float(rhs.norm())
    x = torch.zeros(system.unknown_shape, dtype=rhs.dtype, device=rhs.device)
    if norm_b == 0:
        return CglsResult(x, 0, 0)
    r = rhs.clone()
    s = system.apply_adjoint(r)
    z = apply_inverse(s)
    p = z.clone()
    gamma = float((s * z).sum())
    if gamma <= 0:  # U^T rhs = 0: x = 0 is the least-squares solution
        return CglsResult(x, 0, 0)
    start_ratio = float(s.norm()) / (norm_u * norm_b)
    for iteration in range(1, max_iterations + 1):
        q = system.apply(p)
        curvature = float(q.square().sum()) + damp * float(p.square().sum())
        if curvature == 0:  # no progress possible along p: optimal to rounding
            return CglsResult(x, iteration - 1, 2)
        alpha = gamma / curvature
        x.add_(p, alpha=alpha)
        r.sub_(q, alpha=alpha)
        s = system.apply_adjoint(r)
        if damp:
            s.sub_(x, alpha=damp)
        norm_r = float(r.norm())
        bound = tolerance * (norm_b + norm_u * float(x.norm()))
        if norm_r <= bound:
            return CglsResult(x, iteration, 1)
        ratio = float(s.norm()) / (norm_u * norm_r)
        if ratio <= tolerance:
            return CglsResult(x, iteration, 2)
        if checkpoint and iteration == checkpoint[0]:
            fraction = checkpoint[1]
            if ratio > fraction * start_ratio and norm_r > bound / fraction**2:
                return CglsResult(x, iteration, 7)
        z = apply_inverse(s)
        gamma_next = float((s * z).sum())
        p = z + (gamma_next / gamma) * p
        gamma = gamma_next
    return CglsResult(x, max_iterations, 7)
