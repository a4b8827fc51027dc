"""What every attack returns: the inputs, the labels and per-layer diagnostics."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from torch import Tensor


@dataclass
class LayerDiagnostics:
    """How one layer's system looked and how its solve went.

    ``deficiency_bound`` is a structural lower bound on the rank deficiency (unknowns minus
    equations, with one dependency per output channel); ``rank`` and ``deficiency`` are filled where
    the numerical rank was computed (the audit). ``near_kink`` counts the layer's reconstructed
    (leaky) ReLU outputs so close to the kink that rounding decides their side. ``pool_*`` describe
    how a max-pooling block's positions were settled (:mod:`fl_leak.attacks.linear.pooling`).
    ``noise_level`` is the inconsistency a noise-aware solve found (the floor of its relative
    residual; on the last layer, the update's relative noise per entry:
    :mod:`fl_leak.attacks.linear.noise`), NaN where none was estimated.
    """

    index: int
    path: str
    kind: str
    activation: str
    unknowns: int
    forward_equations: int
    gradient_equations: int
    deficiency_bound: int
    clipped: int = 0
    residual: float = float("nan")
    iterations: int = 0
    stop_reason: str = ""
    solver: str = ""  # the method of the layer's solve ("LSMR", "preconditioned CGLS", ...)
    condition_estimate: float = float("nan")
    seconds: float = 0.0
    corrected: bool = False
    near_kink: int = 0
    rank: int | None = None
    deficiency: int | None = None
    # a block that max-pools: windows that constrain the solve, those whose maximum the solution
    # reproduces at the chosen position, and the solves run to settle the positions
    pool_windows: int = 0
    pool_consistent: int = 0
    pool_rounds: int = 0
    noise_level: float = float("nan")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RestartDiagnostics:
    """How one restart of an optimisation attack (``ig``, ``dlg``) ended.

    ``final_objective`` is the lowest objective the restart reached, that of the iterate it
    returns (after the last step included); ``iterations`` the steps it took; ``early_stop``
    whether it stopped on a stalled objective (``patience``) before ``iterations``; ``diverged``
    whether it stopped on a non-finite objective; ``seconds`` its wall-clock time.
    """

    final_objective: float
    iterations: int
    early_stop: bool
    diverged: bool
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrajectoryDiagnostics:
    """How a FedAvg attack fitted the client's local training (``fedavg_hybrid``,
    ``fedavg_unroll``).

    ``residuals`` holds the update-reproduction residual ``||u(x) - u_obs|| / ||u_obs||`` (``u``
    the simulated update of the estimate ``x``, ``u_obs`` the observed one) after each iteration,
    the first-order estimate's first; ``iterations`` the iterations run; ``order`` the order of
    the returned samples in each pass (its batches are consecutive runs of the mini-batch size);
    ``orders_evaluated`` how many orders the search simulated; ``converged`` whether the residual
    reached the attack's tolerance.
    """

    iterations: int
    residuals: list[float]
    order: list[list[int]]
    orders_evaluated: int
    converged: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Reconstruction:
    """Result of :func:`fl_leak.reconstruct`.

    ``inputs`` has shape ``(B, *input_shape)`` in the model's input space; ``labels`` has shape
    ``(B,)``; ``layers`` lists the weight layers from the input up (empty for optimisation attacks).
    ``restarts`` lists an optimisation attack's restarts in the order they ran, and
    ``best_restart`` is the position in that list of the one returned (the lowest
    ``final_objective``); both are empty/``None`` for the linear attacks. ``trajectory``: how a
    FedAvg attack fitted the local training (None for the others). ``notes`` say the same
    and more for people to read; code reads the fields.
    """

    inputs: Tensor
    labels: Tensor
    layers: list[LayerDiagnostics] = field(default_factory=list)
    attack: str = ""
    seconds: float = 0.0
    labels_recovered: bool = True
    notes: list[str] = field(default_factory=list)
    restarts: list[RestartDiagnostics] = field(default_factory=list)
    best_restart: int | None = None
    trajectory: TrajectoryDiagnostics | None = None
