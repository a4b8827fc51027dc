"""Noise-aware solving of a layer's system, for updates that no input explains exactly.

A perturbed update (Gaussian noise, clipping, quantisation, a FedAvg drift) makes every layer's
stacked system inconsistent: ``U x = V + e``. The least-squares solution then fits ``e`` in the
directions of small singular values, amplified by ``1 / s``, and LSMR at a tight tolerance spends
its whole iteration limit doing so. Three changes, used only when the update is found noisy:

* **The noise level is read from the update itself**: the last layer's weight gradient
  ``G = D^T X`` has rank ``B`` (the batch), so its singular values past the ``B``-th are noise;
  their energy over the ``(m - B)(n - B)`` degrees of freedom of that complement estimates the noise
  variance per entry (:func:`update_noise_level`), relative to ``G``'s RMS.
* **A discrepancy-principle stop** (:func:`solve_discrepancy`): CGLS (LSQR's recurrence) from zero
  is a regularisation whose strength falls with each iteration; the residual drops quickly to the
  level of the inconsistency and then stagnates while the iterate fits noise. The solve runs until
  the residual stagnates (its floor ``r_min`` is then the inconsistency of the system: the noise
  level reported) and returns the first iterate whose residual was within ``discrepancy`` times
  that floor.
* **A flat input where the walk lost the signal**: the input layer's solution is then noise, and
  the input is returned as the least-squares flat image (one value per sample and channel,
  :func:`flat_solution`) of the input layer's system with its forward rows weighted by the
  activation's slope (:func:`forward_weights`): the target of a forward row is ``s^-1(y)`` of the
  reconstructed output ``y``, whose error is amplified by ``1 / s'`` (100 on the negative side
  of a leaky ReLU of slope 0.01); the weight measures the row's residual in the output's units.
  Which of the two inputs is kept is decided by the whole update: the flat one where its own
  gradients (by autograd through the chain) are nearer the observed ones by a factor
  ``FLAT_MARGIN`` in squared relative error (:func:`gradient_mismatch`).

Outputs of a bounded activation are also projected onto its range (``tanh``: ``[-1, 1]``) before
the layer below is built, so that an amplified error cannot leave the activation's domain.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits
from torch import Tensor

from fl_leak.attacks.linear.activations import Activation
from fl_leak.attacks.linear.chain import Chain
from fl_leak.attacks.linear.solver import SolveReport
from fl_leak.attacks.linear.system import LayerSystem
from fl_leak.errors import FlLeakError
from fl_leak.options import check_non_negative, check_positive, check_positive_int

DISCREPANCY_STOP = "discrepancy principle: residual at its noise floor"
# the flat input replaces the solved one only where it fits the update this many times better: on
# an update dominated by noise both fit it about equally, and the detail may still carry signal
FLAT_MARGIN = 4.0
FLAT = "; detail not supported by the update: flat least-squares input"
RANGES = {"tanh": (-1.0, 1.0), "sigmoid": (0.0, 1.0), "relu": (0.0, math.inf)}


@dataclass(frozen=True)
class NoiseOptions:
    """When and how a layer's solve stops at the level of its data's noise.

    Attributes
    ----------
    noise_aware : bool
        Estimate the update's noise level and, above ``noise_threshold``, weight forward rows by the
        activation's slope and stop each solve by the discrepancy principle (module docstring).
        False gives the plain least-squares solve at ``tolerance`` on every update.
    noise_threshold : float
        Relative noise level (per entry, over the RMS of the last layer's weight gradient) above
        which the update counts as noisy (>= 0; default 1e-4: a float32 update's cancellation in
        ``w_sent - w_returned`` alone gives about 1e-6, measured on cnn3_c1 at lr 0.01, and its
        plain solve is the better one there).
    discrepancy : float
        The solve returns the first iterate whose residual is within this factor of the residual's
        floor (>= 1; default 1.001: a well-conditioned layer keeps its least-squares accuracy).
    stagnation : float
        The residual's floor is reached when it fell by less than this share over the last
        ``stagnation_window`` iterations (> 0; default 1e-3).
    stagnation_window : int
        See ``stagnation`` (>= 1; default 50).
    """

    noise_aware: bool = True
    noise_threshold: float = 1e-4
    discrepancy: float = 1.001
    stagnation: float = 1e-3
    stagnation_window: int = 50

    def check_noise_options(self) -> None:
        """Raise on a value out of range (called by the options that inherit these)."""
        check_non_negative("noise_threshold", self.noise_threshold)
        if not (isinstance(self.discrepancy, int | float) and self.discrepancy >= 1):
            raise FlLeakError(f"discrepancy must be a number >= 1, got {self.discrepancy!r}")
        check_positive("stagnation", self.stagnation)
        check_positive_int("stagnation_window", self.stagnation_window)


@dataclass
class NoisySolveReport(SolveReport):
    """A :class:`SolveReport` with the inconsistency the solve found."""

    noise_level: float = math.nan  # the residual's floor, ||U x - V|| / ||V||


def update_noise_level(weight_gradient: Tensor, batch: int) -> float:
    """Relative noise per entry of the last layer's weight gradient, from its rank-``B`` structure.

    ``G = D^T X`` (``m x n``) has rank at most ``batch``; with independent noise of standard
    deviation ``sigma`` per entry, the singular values past the ``batch``-th hold about
    ``sigma^2 (m - B)(n - B)`` of energy. Returns ``sigma`` over the RMS of ``G``; NaN when the
    complement is empty (``B >= min(m, n)``) or ``G`` is zero.
    """
    rows, columns = weight_gradient.shape
    freedom = (rows - batch) * (columns - batch)
    total = float(weight_gradient.double().pow(2).sum())
    if freedom <= 0 or total == 0:
        return math.nan
    singular = torch.linalg.svdvals(weight_gradient.double())
    tail = float(singular[batch:].pow(2).sum())
    return math.sqrt(tail / freedom) / math.sqrt(total / (rows * columns))


def noisy_update(weight_gradient: Tensor, batch: int, options: NoiseOptions) -> tuple[float, bool]:
    """The update's relative noise level (:func:`update_noise_level`; NaN when ``noise_aware`` is
    off or it cannot be estimated) and whether it counts as noisy (above ``noise_threshold``)."""
    level = update_noise_level(weight_gradient, batch) if options.noise_aware else math.nan
    return level, level > options.noise_threshold


def forward_weights(activation: Activation, output: Tensor) -> Tensor:
    """Forward-row weights ``s'(z) / max s'`` at the reconstructed outputs ``output``."""
    slope = activation.derivative(output).abs()
    return slope / slope.max().clamp_min(torch.finfo(slope.dtype).tiny)


def project_to_range(activation: Activation, output: Tensor) -> Tensor:
    """``output`` clamped to the range of ``activation`` (unchanged for unbounded ones)."""
    low, high = RANGES.get(activation.name, (-math.inf, math.inf))
    return output.clamp(low, high)


def solve_discrepancy(
    system: LayerSystem, options: NoiseOptions, max_iterations: int
) -> tuple[Tensor, NoisySolveReport]:
    """Solve ``system`` by CGLS, stopped by the discrepancy principle (module docstring).

    Iterates are kept as the residual crosses each level of a geometric grid (ratio
    ``1 + (discrepancy - 1) / 4``), so the returned one is within that ratio of the first iterate
    below ``discrepancy`` times the floor. Other stops: a residual at ``1e-14`` of ``||V||``
    (consistent), or ``max_iterations``.
    """
    start = time.perf_counter()
    operator = system.as_scipy()
    rhs = system.rhs().detach().cpu().double().numpy()
    norm_rhs = float(np.linalg.norm(rhs)) or 1.0
    ratio = 1.0 + max(options.discrepancy - 1.0, 1e-3) / 4.0
    window = options.stagnation_window
    with threadpool_limits(limits=1, user_api="blas"):
        x = np.zeros(operator.shape[1])
        residual = rhs.copy()
        step = operator.rmatvec(residual)
        direction = step.copy()
        gamma = float(step @ step)
        history = [1.0]
        kept: deque[tuple[float, np.ndarray]] = deque([(1.0, x.copy())], maxlen=64)
        stop, iterations = "iteration limit reached", 0
        while iterations < max_iterations and gamma > 0:
            image = operator.matvec(direction)
            alpha = gamma / float(image @ image)
            x += alpha * direction
            residual -= alpha * image
            step = operator.rmatvec(residual)
            gamma, previous = float(step @ step), gamma
            direction = step + (gamma / previous) * direction
            iterations += 1
            history.append(float(np.linalg.norm(residual)) / norm_rhs)
            if history[-1] * ratio <= kept[-1][0]:
                kept.append((history[-1], x.copy()))
            if history[-1] <= 1e-14:
                stop = "residual below tolerance (consistent system)"
                kept.append((history[-1], x.copy()))
                break
            if iterations >= window and (
                history[-1 - window] - history[-1] <= options.stagnation * history[-1]
            ):
                stop = DISCREPANCY_STOP
                break
    floor = min(history)
    chosen = x
    if stop == DISCREPANCY_STOP:
        chosen = next(iterate for level, iterate in kept if level <= options.discrepancy * floor)
    solution = torch.from_numpy(chosen).to(system.target).reshape(system.unknown_shape)
    report = NoisySolveReport(
        iterations=iterations,
        stop_reason=stop,
        residual=system.relative_residual(solution),
        condition_estimate=math.nan,
        seconds=time.perf_counter() - start,
        noise_level=floor,
    )
    return solution, report


def flat_solution(system: LayerSystem) -> Tensor:
    """The least-squares solution among inputs constant per sample and channel.

    The columns of ``U`` for the ``B x C`` indicator images (one per sample and channel; one per
    sample for a flat input) are built by ``U`` itself and the small dense problem solved exactly.
    """
    shape = system.unknown_shape
    groups = shape[:2] if len(shape) > 2 else shape[:1]
    count = math.prod(groups)
    indicators = torch.eye(count, dtype=system.target.dtype, device=system.target.device)
    indicators = indicators.reshape(count, *groups, *([1] * (len(shape) - len(groups))))
    columns = torch.stack([system.apply(e.expand(shape)) for e in indicators], dim=1)
    values = torch.linalg.lstsq(columns, system.rhs().unsqueeze(1)).solution
    return values.reshape(*groups, *([1] * (len(shape) - len(groups)))).expand(shape).clone()


def gradient_mismatch(chain: Chain, inputs: Tensor, labels: Tensor) -> float:
    """``sum_l ||G_l(inputs) - G_l||^2 / ||G_l||^2`` over the chain's weight gradients.

    ``G_l(inputs)`` is the weight gradient of block ``l`` that ``inputs`` with ``labels`` would
    give (batch-mean cross-entropy on the last activation's output, autograd through the blocks);
    ``G_l`` the observed one.
    """
    x = inputs.detach().requires_grad_(True)  # puts every pre-activation on the graph
    layer_inputs, pre_activations = [], []
    for block in chain.blocks:
        layer_inputs.append(x)
        z = block.operator.add_bias(block.operator.forward(x))
        pre_activations.append(z)
        x = block.activation.forward(z)
    loss = F.cross_entropy(x, labels.to(x.device))
    output_gradients = torch.autograd.grad(loss, pre_activations)
    total = 0.0
    for block, layer_input, d in zip(chain.blocks, layer_inputs, output_gradients, strict=True):
        observed = block.weight_gradient
        own = block.operator.gradient(layer_input.detach(), d.detach())
        total += float((own - observed).pow(2).sum() / observed.pow(2).sum().clamp_min(1e-300))
    return total
