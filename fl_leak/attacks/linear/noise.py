"""Noise-aware solving of a layer's system, for updates that no input explains exactly.

A perturbed update (Gaussian noise, clipping, quantisation, a FedAvg drift) makes every layer's
stacked system inconsistent: ``U x = V + e``. The least-squares solution then fits ``e`` in the
directions of small singular values, amplified by ``1 / s``, and LSMR at a tight tolerance spends
its whole iteration limit doing so. Four changes, used only when the update is found noisy:

* **The noise level is read from the update itself**: the last layer's weight gradient
  ``G = D^T X`` has rank ``B`` (the batch), so its singular values past the ``B``-th are noise;
  their energy over the ``(m - B)(n - B)`` degrees of freedom of that complement estimates the noise
  variance per entry (:func:`update_noise_level`), relative to ``G``'s RMS.
* **Tikhonov regularisation** (:func:`solve_tikhonov`) where a convolution layer's normal
  matrix can be factored (the least-squares preconditioner's factorisation, with ``delta`` the
  Tikhonov ``lambda^2``): ``min ||U x - V||^2 + lambda^2 ||x - c||^2`` with
  ``lambda^2 = tikhonov_weight * level^2`` times the forward normal matrix's mean diagonal (a
  Wiener filter's noise-to-signal ratio), ``c`` the least-squares flat input on the input layer
  and the grey image's layer input above it; solved exactly in one factorisation.
* **A discrepancy-principle stop** (:func:`solve_discrepancy`) on every other layer: CGLS
  (LSQR's recurrence) from zero is a regularisation whose strength falls with each iteration;
  the residual drops quickly to the level of the inconsistency and then stagnates while the
  iterate fits noise. The solve runs until the residual stagnates (its floor ``r_min`` is then
  the inconsistency of the system: the noise level reported) and returns the first iterate whose
  residual was within ``discrepancy`` times that floor.
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

**Shrinkage towards grey** (:func:`shrink_towards_grey`): however each layer stops, the error that
reaches the input can exceed the image itself (``lenet``'s leaky ReLUs amplify it by 100 per
layer). The reconstruction ``x`` is therefore shrunk towards the flat grey image ``c`` (the middle
of ``input_range``) band by band (:func:`bands`: the per-channel mean, then block averages of
halving size, then the finest detail; orthogonal components) and sample by sample (a batch's
images are not recovered equally well), each band ``k`` of each image by the Wiener /
James-Stein weight ``w_k = S_k / ||x_k - c_k||^2``. The signal energy ``S_k`` is
``||x_k - c_k||^2 - E_k``, bounded by the range (``||x - c||^2 <= n r^2`` for an image of ``n``
values within ``r`` of ``c``), and the error energy ``E_k`` is measured, not modelled, by two more
walks (:func:`noisy_copy`): one on the update plus a second draw of its own noise (the two
reconstructions differ by about one draw of the error, while the walk stays linear in the noise),
one on the gradients of the clamped reconstruction plus a draw of the noise (a problem like the
observed one whose answer is known: its error includes what saturations and lost signal do); per
band the larger energy of the two is used, or where the band has few values (the mean colour of
one image: 3), the upper 95% confidence bound of the expected energy that the two draws give
(:func:`error_energy`). The draws are seeded apart from the update's own noise (``COPY_SEEDS``).
With the true ``E_k`` the weight's expected squared error ``S E / (S + E)`` is below both the
reconstruction's (``E``) and grey's (``S``); an update whose signal is lost returns grey. The
initial iterate of every noisy layer solve is that layer's input for the grey image
(:func:`grey_inputs`), so that the stopped solves regularise towards grey rather than towards zero.
The noise drawn follows the update's noise model, read from the last layer too: the noise of its
bias gradient (the part of ``b = D^T 1`` outside the span of ``G``'s ``B`` leading left singular
vectors) against that of ``G`` gives the exponent ``p`` of a per-tensor noise
``sigma_l = sigma_G (rms_l / rms_G)^p`` (:func:`noise_exponent`: ``p = 0`` for noise of one
standard deviation on every entry, as local DP adds; ``p = 1`` for noise relative to each tensor).
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, replace
from itertools import pairwise

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import gammaincinv
from threadpoolctl import threadpool_limits
from torch import Tensor

from fl_leak.attacks.linear.activations import Activation
from fl_leak.attacks.linear.cgls import cgls
from fl_leak.attacks.linear.chain import Chain
from fl_leak.attacks.linear.preconditioner import NormalPreconditioner, applicable_reach
from fl_leak.attacks.linear.solver import SolveReport
from fl_leak.attacks.linear.system import LayerSystem
from fl_leak.errors import FlLeakError
from fl_leak.options import (
    check_non_negative,
    check_positive,
    check_positive_int,
    check_range,
)

DISCREPANCY_STOP = "discrepancy principle: residual at its noise floor"
TIKHONOV_STOP = "Tikhonov-regularised"
# a Tikhonov solve preconditioned by another system's factorisation stops at this tolerance
# (its error is then far below the noise it is run to measure), and the system's own
# factorisation is built where it takes more than REUSE_ITERATIONS
REUSE_TOLERANCE = 1e-6
REUSE_ITERATIONS = 10
# ... and is abandoned earlier where its first iterations show it will not: after 2 of them the
# optimality ratio had fallen by 10 to 10^5 times in every reuse that converged by it, by 1.2 to
# 1.8 times in all but one that did not (19 times, converging just past the limit), and the
# residual was within 2 times its stop in every reuse that converged by that (cnn2_c5 and
# cnn2_c1 at batch 1-8 under relative noise and local DP)
REUSE_CHECKPOINT = (2, 0.3)
OWN_ITERATIONS = 10  # with its own factorisation a solve takes one or two
# the flat input replaces the solved one only where it fits the update this many times better: on
# an update dominated by noise both fit it about equally, and the detail may still carry signal
FLAT_MARGIN = 4.0
FLAT = "; detail not supported by the update: flat least-squares input"
SHRUNK = "; shrunk towards grey"
RANGES = {"tanh": (-1.0, 1.0), "sigmoid": (0.0, 1.0), "relu": (0.0, math.inf)}


# seeds of the shrinkage's two noise draws: distinct, and far from the small seeds a perturbed
# update is usually drawn with (a draw from the generator that made the update's own noise repeats
# that noise, tensor by tensor, instead of drawing it anew: a copy of an update noised with seed 0
# held twice its noise, or none)
COPY_SEEDS = (104_729, 1_299_709)
CONFIDENCE = 0.95  # of the upper bound on a band's error energy (error_energy)


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

    tikhonov_weight : float
        On a noisy update, a convolution layer whose normal-matrix factorisation applies (the
        least-squares preconditioner's conditions, float64) is solved by Tikhonov
        regularisation, towards the least-squares flat input on the input layer and towards the
        layer's input for the grey image above it, with
        ``lambda^2 = tikhonov_weight * level^2 * mean(diag(A^T F^2 A))`` (``level`` the update's
        noise level): one factorisation instead of thousands of CGLS iterations (>= 0; default
        0.3; 0 stops every layer by the discrepancy principle instead).
    shrink : bool
        On a noisy update, shrink the reconstruction towards the flat grey image band by band,
        with weights from the errors of two more walks (module docstring).
    input_range : (float, float) or None
        The inputs' range: its middle is the grey the reconstruction is shrunk towards, its half
        width bounds the signal's energy (default (0, 1); None: no shrinkage).
    free_scale : bool
        Where a batch's last-layer fit misses the update, fit the update's overall scale too
        (clipping to a norm scales an update by a factor the server does not see; default True;
        :func:`~fl_leak.attacks.linear.last_layer.solve_last_layer`).
    """

    noise_aware: bool = True
    noise_threshold: float = 1e-4
    discrepancy: float = 1.001
    stagnation: float = 1e-3
    stagnation_window: int = 50
    tikhonov_weight: float = 0.3
    shrink: bool = True
    input_range: tuple[float, float] | None = (0.0, 1.0)
    free_scale: bool = True

    def check_noise_options(self) -> None:
        """Raise on a value out of range (called by the options that inherit these)."""
        check_non_negative("noise_threshold", self.noise_threshold)
        check_non_negative("tikhonov_weight", self.tikhonov_weight)
        check_range("input_range", self.input_range)
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
    system: LayerSystem, options: NoiseOptions, max_iterations: int, initial: Tensor | None = None
) -> tuple[Tensor, NoisySolveReport]:
    """Solve ``system`` by CGLS from ``initial`` (zero if None), stopped by the discrepancy
    principle (module docstring): the stopped iterate is regularised towards ``initial``.

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
        if initial is not None:
            x = initial.detach().cpu().double().reshape(-1).numpy().copy()
        residual = rhs - operator.matvec(x)
        step = operator.rmatvec(residual)
        direction = step.copy()
        gamma = float(step @ step)
        history = [float(np.linalg.norm(residual)) / norm_rhs]
        kept: deque[tuple[float, np.ndarray]] = deque([(history[0], x.copy())], maxlen=64)
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


def solve_tikhonov(
    system: LayerSystem,
    relative_damping: float,
    initial: Tensor | None = None,
    tolerance: float = 1e-10,
    reuse: NormalPreconditioner | None = None,
) -> tuple[Tensor, NoisySolveReport, NormalPreconditioner] | None:
    """``argmin ||U x - V||^2 + lambda^2 ||x - initial||^2`` (``initial`` zero if None) and the
    factorisation used, or None where the factorisation does not apply (not a plain
    convolution, setup above its bound, not float64).

    ``lambda^2`` is ``relative_damping`` times the mean diagonal of the forward normal matrix
    ``A^T F^2 A``: the factorisation of ``U^T U + lambda^2 I``
    (:class:`~fl_leak.attacks.linear.preconditioner.NormalPreconditioner` with that ``delta``) is
    the problem's own normal matrix, and damped CGLS preconditioned by it converges in one or two
    iterations. ``reuse``, the factorisation of a nearby system (the same layer in another
    walk), sets ``lambda^2`` instead and preconditions the solve; where it does not converge
    within ``REUSE_ITERATIONS`` (or its first iterations show it will not: ``REUSE_CHECKPOINT``)
    the system's own is built. The report's ``noise_level`` is the residual reached.
    """
    start = time.perf_counter()
    if system.target.dtype != torch.float64:
        return None
    reach = applicable_reach(system)
    if reach is None:
        return None
    target = system.rhs().detach()
    origin = target.new_zeros(system.unknown_shape)
    if initial is not None:
        origin = initial.detach().to(target).reshape(system.unknown_shape)
    remainder = target - system.apply(origin)
    solved = None
    if reuse is not None:
        relative_damping = reuse.delta / reuse.mean_diagonal
        factor = reuse
        solved = cgls(
            system,
            remainder,
            max(tolerance, REUSE_TOLERANCE),
            REUSE_ITERATIONS,
            reuse.apply,
            reuse.delta,
            REUSE_CHECKPOINT,
        )
    if solved is None or solved.stop_code == 7:
        try:
            factor = NormalPreconditioner(system, reach, relative_damping)
        except torch.linalg.LinAlgError:
            return None
        solved = cgls(system, remainder, tolerance, OWN_ITERATIONS, factor.apply, factor.delta)
    x = origin + solved.solution
    residual = system.relative_residual(x)
    report = NoisySolveReport(
        iterations=solved.iterations,
        stop_reason=f"{TIKHONOV_STOP} (lambda^2 {factor.delta:.1e})",
        residual=residual,
        condition_estimate=math.nan,
        seconds=time.perf_counter() - start,
        method="Tikhonov (normal-matrix factorisation)",
        noise_level=residual,
    )
    return x, report, factor


def grey_inputs(chain: Chain, batch: int, input_range: tuple[float, float]) -> list[Tensor]:
    """Each block's input when the model's input is the flat grey image (the middle of
    ``input_range``): the starts a noisy walk regularises each layer towards."""
    block = chain.blocks[0]
    weight = block.operator.weight
    x = torch.full(
        (batch, *block.operator.in_shape),
        sum(input_range) / 2,
        dtype=weight.dtype,
        device=weight.device,
    )
    inputs = []
    for block in chain.blocks:
        inputs.append(x)
        x = block.output(block.operator.add_bias(block.operator.forward(x)))
    return inputs


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


def chain_gradients(chain: Chain, inputs: Tensor, labels: Tensor) -> list[tuple[Tensor, Tensor]]:
    """Each block's weight and bias gradients that ``inputs`` with ``labels`` would give
    (batch-mean cross-entropy on the last activation's output, autograd through the blocks)."""
    x = inputs.detach().requires_grad_(True)  # puts every pre-activation on the graph
    layer_inputs, pre_activations = [], []
    for block in chain.blocks:
        layer_inputs.append(x)
        z = block.operator.add_bias(block.operator.forward(x))
        pre_activations.append(z)
        x = block.output(z)
    loss = F.cross_entropy(x, labels.to(x.device))
    output_gradients = torch.autograd.grad(loss, pre_activations)
    return [
        (
            block.operator.gradient(layer_input.detach(), d.detach()),
            d.detach().movedim(1, 0).reshape(d.shape[1], -1).sum(1),
        )
        for block, layer_input, d in zip(chain.blocks, layer_inputs, output_gradients, strict=True)
    ]


def gradient_mismatch(chain: Chain, inputs: Tensor, labels: Tensor) -> float:
    """``sum_l ||G_l(inputs) - G_l||^2 / ||G_l||^2`` over the chain's weight gradients.

    ``G_l(inputs)`` is the weight gradient of block ``l`` that ``inputs`` with ``labels`` would
    give (:func:`chain_gradients`); ``G_l`` the observed one.
    """
    total = 0.0
    for block, (own, _) in zip(chain.blocks, chain_gradients(chain, inputs, labels), strict=True):
        observed = block.weight_gradient
        total += float((own - observed).pow(2).sum() / observed.pow(2).sum().clamp_min(1e-300))
    return total


def _rms(t: Tensor) -> float:
    return float(t.double().pow(2).mean().sqrt())


def noise_exponent(weight_gradient: Tensor, bias_gradient: Tensor, batch: int) -> float:
    """The exponent ``p`` of the update's noise model ``sigma_l = sigma_G (rms_l / rms_G)^p``,
    from the last layer's weight and bias gradients (module docstring), clamped to ``[0, 1]``.

    ``b = D^T 1`` lies in the span of ``D^T``, which ``G``'s ``B`` leading left singular vectors
    estimate; the remainder of ``b`` (``m - B`` degrees of freedom) is its noise. 0.5 (between the
    two models) where it cannot be told: equal RMS, no complement, or a zero remainder. Where
    ``b``'s RMS is far above ``G``'s the estimate leans towards 1: the estimated span's own error
    leaks part of ``b`` into the remainder (noise of one standard deviation everywhere, 40 x 300
    weights: 0.08 at an RMS ratio of 17, 0.45 at 170).
    """
    rows = weight_gradient.shape[0]
    ratio = _rms(bias_gradient) / max(_rms(weight_gradient), 1e-300)
    sigma_g = update_noise_level(weight_gradient, batch) * _rms(weight_gradient)
    if rows <= batch or not math.isfinite(sigma_g) or sigma_g == 0 or abs(math.log(ratio)) < 0.1:
        return 0.5
    leading = torch.linalg.svd(weight_gradient.double(), full_matrices=False).U[:, :batch]
    b = bias_gradient.double()
    remainder = b - leading @ (leading.T @ b)
    sigma_b = math.sqrt(float(remainder.pow(2).sum()) / (rows - batch))
    if sigma_b == 0:
        return 0.5
    return min(max(math.log(sigma_b / sigma_g) / math.log(ratio), 0.0), 1.0)


def noisy_copy(
    chain: Chain, gradients: list[tuple[Tensor, Tensor | None]], batch: int, seed: int
) -> Chain:
    """``chain`` with each block's weight and bias gradients replaced by ``gradients`` plus a draw
    of the observed update's noise, from a generator seeded with ``seed``.

    The noise of the last layer's weight gradient (:func:`update_noise_level`) sets the scale and
    :func:`noise_exponent` how it carries over to the other tensors (by their observed RMS).
    """
    last = chain.last
    assert last.bias_gradient is not None
    rms_g = _rms(last.weight_gradient)
    sigma_g = update_noise_level(last.weight_gradient, batch) * rms_g
    exponent = noise_exponent(last.weight_gradient, last.bias_gradient, batch)
    generator = torch.Generator().manual_seed(seed)

    def draw(clean: Tensor | None, observed: Tensor | None) -> Tensor | None:
        if clean is None or observed is None:
            return None
        std = sigma_g * (_rms(observed) / rms_g) ** exponent
        noise = torch.randn(clean.shape, generator=generator, dtype=torch.float64)
        return clean + (std * noise).to(device=clean.device, dtype=clean.dtype)

    blocks = []
    for block, (weight, bias) in zip(chain.blocks, gradients, strict=True):
        noisy_weight = draw(weight, block.weight_gradient)
        assert noisy_weight is not None
        blocks.append(
            replace(
                block,
                weight_gradient=noisy_weight,
                bias_gradient=draw(bias, block.bias_gradient),
            )
        )
    return replace(chain, blocks=blocks)


def _levels(x: Tensor) -> list[tuple[Tensor, int]]:
    """``x``'s averages, coarse to fine, ending at ``x``, each with its count of distinct values:
    per sample and channel, then over blocks of a power of two dividing ``H`` and ``W``."""
    if x.dim() != 4:
        mean = x.mean(dim=tuple(range(1, x.dim())), keepdim=True).expand_as(x)
        return [(mean, x.shape[0]), (x, x.numel())]
    batch, channels, height, width = x.shape
    sizes = [s for s in (2**k for k in range(12)) if height % s == 0 and width % s == 0]
    levels = [(x.mean((2, 3), keepdim=True).expand_as(x), batch * channels)]
    for size in reversed(sizes):
        if size == 1:
            levels.append((x, x.numel()))
        elif size < min(height, width):
            pooled = F.avg_pool2d(x, size)
            expanded = pooled.repeat_interleave(size, 2).repeat_interleave(size, 3)
            levels.append((expanded, pooled.numel()))
    return levels


def bands(x: Tensor) -> list[Tensor]:
    """Orthogonal components of ``x`` (``(B, C, H, W)`` or ``(B, F)``) that sum to it, coarse to
    fine: the mean per sample and channel, then the change from each block average (blocks of a
    power of two dividing ``H`` and ``W``, halving) to the next finer one, ending at ``x``."""
    levels = [level for level, _ in _levels(x)]
    return [levels[0], *(fine - coarse for coarse, fine in pairwise(levels))]


def band_freedoms(x: Tensor) -> list[int]:
    """The dimension of each of :func:`bands`' components of a tensor shaped like ``x``."""
    counts = [count for _, count in _levels(x)]
    return [counts[0], *(fine - coarse for coarse, fine in pairwise(counts))]


def error_energy(draws: list[float], freedom: int) -> float:
    """A band's error energy from independent draws of it: the largest draw, or where more is
    likely, the upper ``CONFIDENCE`` bound of its expectation for a Gaussian error of ``freedom``
    dimensions (``freedom * sum / chi2(1 - CONFIDENCE, freedom * draws)``). A band of a few
    values (the per-channel mean of one image: 3) is measured from a few squares: one draw can
    fall far below the expected energy, which would keep the band's noise."""
    pooled = freedom * len(draws)
    quantile = 2 * float(gammaincinv(pooled / 2, 1 - CONFIDENCE))  # of chi-square, pooled dof
    bound = freedom * sum(draws) / quantile
    return max(*draws, bound)


@dataclass
class Shrinkage:
    """The shrunk reconstruction and, per band (coarse to fine) and sample, its weight and
    energies (each a ``(bands, batch)`` tensor)."""

    inputs: Tensor
    weights: Tensor
    error: Tensor  # E: the measured error energy per value of the sample's image
    energy: Tensor  # ||x - c||^2 per value of the sample's image

    @property
    def sample_weights(self) -> Tensor:
        """Each sample's overall weight: the share of its ``||x - c||^2`` kept (energy-weighted
        mean of ``w^2`` over the bands, square-rooted)."""
        kept = (self.weights.pow(2) * self.energy).sum(0)
        return (kept / self.energy.sum(0).clamp(min=1e-300)).sqrt()

    @property
    def weight(self) -> float:
        """The overall weight: the share of the batch's ``||x - c||^2`` kept."""
        total = float(self.energy.sum()) or 1.0
        return math.sqrt(float((self.weights.pow(2) * self.energy).sum()) / total)


def shrink_towards_grey(
    estimate: Tensor, errors: list[Tensor], input_range: tuple[float, float]
) -> Shrinkage:
    """``estimate`` (a batch) shrunk band by band and sample by sample towards the middle of
    ``input_range`` (module docstring); ``errors`` are draws of its error (each band's energy
    per sample from them by :func:`error_energy`). Each sample has its own weights: a batch's
    samples are not reconstructed equally well (two of one label share an ambiguous split)."""
    low, high = input_range
    centre, radius = (low + high) / 2, (high - low) / 2
    batch = estimate.shape[0]
    count = estimate[0].numel()

    def per_sample(band: Tensor) -> Tensor:
        return band.reshape(batch, -1).pow(2).sum(1).double().cpu()

    shrunk = torch.full_like(estimate, centre)
    weights, measured, energies = [], [], []
    for signal, freedom, *differences in zip(
        bands(estimate - centre),
        band_freedoms(estimate[:1]),
        *(bands(e) for e in errors),
        strict=True,
    ):
        energy = per_sample(signal)
        draws = torch.stack([per_sample(d) for d in differences], dim=1)
        error = torch.tensor([error_energy(d.tolist(), freedom) for d in draws])
        kept = (energy - error).clamp(min=0.0, max=count * radius**2)
        weight = torch.where(energy > 0, kept / energy, torch.zeros_like(energy))
        factor = weight.to(signal).reshape(-1, *[1] * (signal.dim() - 1))
        shrunk = shrunk + factor * signal
        weights.append(weight)
        measured.append(error / count)
        energies.append(energy / count)
    return Shrinkage(shrunk, torch.stack(weights), torch.stack(measured), torch.stack(energies))


def shrink_note(shrinkage: Shrinkage) -> str:
    """A note with the shrinkage's weights and energies per band, each the mean over the batch's
    samples, and each sample's overall weight."""
    bands_text = ", ".join(
        f"{w:.2f} ({e:.1e} / {s:.1e})"
        for w, e, s in zip(
            shrinkage.weights.mean(1).tolist(),
            shrinkage.error.mean(1).tolist(),
            shrinkage.energy.mean(1).tolist(),
            strict=True,
        )
    )
    samples = ", ".join(f"{w:.2f}" for w in shrinkage.sample_weights.tolist())
    return (
        "noisy update: input shrunk towards the flat grey image; per band, coarse to fine, "
        "mean weight (measured error / energy around grey, per value): "
        f"{bands_text}; overall weight per sample: {samples}"
    )
