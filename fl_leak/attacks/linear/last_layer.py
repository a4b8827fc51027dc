"""The inputs of the last (fully connected) layer, from its weight and bias gradients.

One sample: every row ``j`` of ``G = d x^T`` is ``d_j x^T`` and ``g = d``, so the least-squares
estimate from all rows is ``x = G^T g / (g . g)``.

A batch of ``B`` samples: ``G = D^T X`` has rank ``B`` (while ``B <=`` classes), so the rows of
``X`` lie in the row space of ``G``: ``X = C V^T`` with ``V`` its top ``B`` right singular vectors.
Given the labels, each sample's output gradient ``d_b = s'(z_b) (softmax(s(z_b)) - e_{y_b}) / B``
depends only on its own coefficients ``c_b`` (``z_b = W V c_b + b``), and ``C`` must satisfy
``D(C)^T C = G V = U S`` and ``D(C)^T 1 = g``: a small nonlinear least-squares problem in the
``B x B`` coefficients, solved by Levenberg-Marquardt (scipy) with an autograd Jacobian from
seeded random starts. With more samples than the rank of ``G`` the inputs are not determined; the
best estimate in the row space is returned and the diagnostics say so.

An update scaled by an unknown factor ``a`` (clipping to a norm: ``a = min(1, norm / ||u||)``)
leaves the single-sample solution as it is (``x`` is a ratio of ``G`` and ``g``; ``d = g``
carries the scale to the layers below, whose gradients carry it too), but no batch fits
``D(C)^T C = a U S`` with ``a = 1``. Where that fit misses, the batch is fitted again with
``log a`` as one more unknown, and that fit kept where it is exact (``free_scale``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import least_squares
from torch import Tensor

from fl_leak.attacks.labels import labels_from_counts, round_counts
from fl_leak.attacks.linear.activations import Activation
from fl_leak.errors import FlLeakError


@dataclass
class LastLayerSolution:
    """Inputs ``X`` (B, n) and output gradients ``D`` (B, m) of the last layer."""

    inputs: Tensor
    output_gradients: Tensor
    residual: float
    rank: int
    notes: list[str] = field(default_factory=list)
    condition: float = 1.0  # s_1 / s_rank of the weight gradient's top singular values
    scale: float = 1.0  # the update's fitted scale: the gradients are ``scale`` times a batch's
    # the fit with the scale free where it was tried and not taken (it proposes label counts)
    scaled_fit: LastLayerSolution | None = None


@dataclass(frozen=True)
class LastLayer:
    """What the server knows of the last layer: weight, bias, final activation, gradients."""

    weight: Tensor
    bias: Tensor
    activation: Activation
    weight_gradient: Tensor
    bias_gradient: Tensor

    def output_gradients(self, z: Tensor, labels: Tensor) -> Tensor:
        """``dL/dz`` of the batch-mean cross-entropy on ``s(z)``, for logits ``z`` (B, m)."""
        y = self.activation.forward(z)
        onehot = F.one_hot(labels, z.shape[1]).to(z)
        return self.activation.derivative(y) * (torch.softmax(y, dim=1) - onehot) / z.shape[0]


def numerical_rank(singular: Tensor, shape: tuple[int, int]) -> int:
    """Rank from descending singular values at numpy's tolerance ``s_max * max(shape) * eps``."""
    if singular.numel() == 0 or singular[0] == 0:
        return 0
    tolerance = singular[0] * max(shape) * torch.finfo(singular.dtype).eps
    return int((singular > tolerance).sum())


def _single(layer: LastLayer) -> LastLayerSolution:
    g, G = layer.bias_gradient, layer.weight_gradient
    x = (G.T @ g) / (g @ g)
    residual = torch.linalg.norm(G - torch.outer(g, x)) / torch.linalg.norm(G).clamp_min(1e-300)
    return LastLayerSolution(x.reshape(1, -1), g.reshape(1, -1), float(residual), 1)


def _single_noisy(layer: LastLayer) -> LastLayerSolution:
    """Batch 1 from a noisy update: ``G = d x^T`` from ``G``'s leading singular triple
    ``s u v^T``, its scale split by ``u . g``: ``d = (u . g) u``, ``x = s v / (u . g)``.

    The closed form ``x = G^T g / (g . g)`` divides by ``g . g``, whose noise adds ``m sigma^2``
    on average (``m`` entries of noise ``sigma``): the input is shrunk by that factor (by half
    at relative noise 1), and through the layers below the image darkens. ``u . g`` carries the
    noise of one entry instead.
    """
    g, G = layer.bias_gradient, layer.weight_gradient
    U, S, Vh = torch.linalg.svd(G, full_matrices=False)
    u, v = U[:, 0], Vh[0]
    scale = float(u @ g)
    if scale == 0:
        return _single(layer)
    x = S[0] * v / scale
    d = scale * u
    residual = torch.linalg.norm(G - torch.outer(g, x)) / torch.linalg.norm(G).clamp_min(1e-300)
    return LastLayerSolution(x.reshape(1, -1), d.reshape(1, -1), float(residual), 1)


# a scale is taken where it cuts the batch fit's residual this many times (a clipped float32
# update: 4e6 times, to its rounding; top-k at 0.1: 1.04 to 2 times)
SCALE_EXPLAINS = 100
# and tried only above this residual: below it the misfit is rounding (a float32 update of
# cnn2_c5 at batch 4: 2-3e-8), no scale's (a clip to half the norm: 0.08)
SCALE_WORTH_TRYING = 1e-6


def _accepted_residual(noise_level: float) -> float:
    """The relative residual below which a batch's fit is taken as exact: twice the noise."""
    return max(1e-9, 2 * noise_level)


def _batch(
    layer: LastLayer,
    labels: Tensor,
    restarts: int,
    seed: int,
    noise_level: float,
    free_scale: bool = False,
    skip: int = 0,
) -> LastLayerSolution:
    """The batch's fit (module docstring); ``free_scale`` fits the update's scale too. The first
    ``skip`` starts (fewer than ``restarts``) are drawn and not run: another call ran them."""
    G, g = layer.weight_gradient, layer.bias_gradient
    batch = labels.numel()
    U, S, Vh = torch.linalg.svd(G, full_matrices=False)
    classes, features = G.shape
    rank = min(batch, numerical_rank(S, (classes, features)))
    U, S, V = U[:, :rank], S[:rank], Vh[:rank].T
    M = layer.weight @ V  # logits are z_b = M c_b + bias
    target = U * S
    scale = float(torch.linalg.norm(target))
    labels = labels.to(G.device)

    def split(c: Tensor) -> tuple[Tensor, Tensor]:  # coefficients, and the scale's logarithm
        return c[: batch * rank].reshape(batch, rank), c[batch * rank :].sum()

    def residual(c: Tensor) -> Tensor:
        C, log_scale = split(c)
        D = log_scale.exp() * layer.output_gradients(C @ M.T + layer.bias, labels)
        return torch.cat([(D.T @ C - target).reshape(-1), D.sum(0) - g]) / scale

    def fun(c: np.ndarray) -> np.ndarray:
        return residual(torch.from_numpy(c).to(G)).cpu().numpy()

    def jac(c: np.ndarray) -> np.ndarray:
        # vectorize: one batched backward pass (vmap) instead of one per residual entry; measured
        # 8x faster on cnn2_c5 at batch 8 and 6x at 16, same solution
        point = torch.from_numpy(c).to(G)
        return torch.autograd.functional.jacobian(residual, point, vectorize=True).cpu().numpy()

    generator = np.random.default_rng(seed)
    magnitude = scale * batch / np.sqrt(batch * rank)
    determined = rank == batch
    # an undetermined system has no exact solution to look for: one start, a short budget
    method, attempts, budget = ("lm", restarts, 2000) if determined else ("trf", 1, 100)
    budget = min(budget, 200) if noise_level > 0 else budget
    # a noisy G has no exact fit: accept a start within twice its noise, tolerances and budget
    # to match (the relative changes at which the search stops grow with the noise's square:
    # under local DP at noise 0.1 the fit took 17 evaluations instead of 200, at the same
    # residual to 3%, and the same reconstructions)
    accept = _accepted_residual(noise_level)
    tolerance = max(1e-8, 1e-3 * noise_level**2) if noise_level > 0 else 1e-15
    best = None
    for attempt in range(attempts):
        start = generator.standard_normal(batch * rank) * magnitude
        if attempt < skip:
            continue
        if free_scale:
            start = np.append(start, 0.0)  # from the unscaled update
        result = least_squares(
            fun,
            start,
            jac=jac,
            method=method,
            xtol=tolerance,
            ftol=tolerance,
            gtol=tolerance,
            max_nfev=budget,
        )
        if best is None or result.cost < best.cost:
            best = result
        if np.sqrt(2 * best.cost) < accept:
            break
    assert best is not None
    C, log_scale = split(torch.from_numpy(best.x).to(G))
    fitted_scale = float(log_scale.exp())
    notes = []
    if rank < batch:
        notes.append(
            f"gradient of the last layer has rank {rank} < batch size {batch}: the "
            "inputs are not determined; best estimate in its row space"
        )
    if free_scale and abs(fitted_scale - 1) > 1e-6:
        notes.append(f"the update fits a batch's gradients scaled by {fitted_scale:.4g}")
    return LastLayerSolution(
        C @ V.T,
        fitted_scale * layer.output_gradients(C @ M.T + layer.bias, labels),
        float(np.sqrt(2 * best.cost)),
        rank,
        notes,
        float(S[0] / S[-1]),
        fitted_scale,
    )


def solve_last_layer(
    layer: LastLayer,
    labels: Tensor,
    restarts: int = 8,
    seed: int = 0,
    noise_level: float = 0.0,
    free_scale: bool = False,
) -> LastLayerSolution:
    """Recover the last layer's inputs and output gradients (module docstring).

    ``free_scale``: where a batch's fit from the first start ends above its accepted residual
    (``1e-9``, or twice ``noise_level``) and above ``SCALE_WORTH_TRYING`` (a float32 update's
    rounding stays below it), fit it with the update's scale as one more unknown, and
    keep that fit only where the scale explains the misfit: exact (``1e-9``), or at most
    ``1 / SCALE_EXPLAINS`` of the residual without it (a float32 update's rounding stays; on a
    noisy update the scale's misfit must be far above the noise). Else the fit with the scale
    fixed runs from every start, as without ``free_scale``: a sparsified update, for one, fits
    somewhat better with a smaller scale, and its inputs can be worse (top-k at 0.1 of the
    defenses study, one client: 13.2 dB unscaled, 10.8 dB with a scale within its noise).

    ``noise_level`` > 0 (the update's relative noise, :mod:`fl_leak.attacks.linear.noise`) stops
    a batch's search at the first start whose relative residual is below twice it, with
    tolerances of ``max(1e-8, 1e-3 noise_level^2)`` instead of 1e-15 and at most 200
    evaluations per start: a noisy gradient
    has no exact fit to look for (the noise in the top-``B`` part of ``G`` is at most the noise
    of ``G``).
    """
    if float(layer.bias_gradient @ layer.bias_gradient) <= 0:
        raise FlLeakError(
            "the last layer's bias gradient is zero: the update carries no signal to invert "
            "(loss at its minimum, or the gradient was zeroed by a defense)"
        )
    if labels.numel() == 1:
        return _single_noisy(layer) if noise_level > 0 else _single(layer)
    if not free_scale:
        return _batch(layer, labels, restarts, seed, noise_level)
    accept = _accepted_residual(noise_level)
    first = _batch(layer, labels, 1, seed, noise_level)
    if first.residual < max(accept, SCALE_WORTH_TRYING) or first.rank < labels.numel():
        return first  # fits (to rounding), or cannot fit exactly
    scaled = _batch(layer, labels, restarts, seed, noise_level, free_scale=True)
    if scaled.residual < max(_accepted_residual(0.0), first.residual / SCALE_EXPLAINS):
        return scaled
    fixed = first  # and the other starts, as without free_scale (the first is not run again)
    if restarts > 1:
        rest = _batch(layer, labels, restarts, seed, noise_level, skip=1)
        fixed = rest if rest.residual < first.residual else first
    fixed.scaled_fit = scaled
    return fixed


def counts_from_inputs(layer: LastLayer, inputs: Tensor, scale: float = 1.0) -> Tensor:
    """Per-class counts implied by the last layer's inputs ``X`` and its bias gradient, the
    update's ``scale`` divided out.

    From ``g_j = sum_b s'_bj (p_bj - [y_b = j]) / B``: ``n_j ~ (sum_b s'_bj p_bj - B g_j) / s'_j``
    with ``s'_j`` the batch mean of ``s'_bj`` (exact for an identity final activation).
    """
    outputs = layer.activation.forward(inputs @ layer.weight.T + layer.bias)
    slope = layer.activation.derivative(outputs)
    probabilities = torch.softmax(outputs, dim=1)
    batch = inputs.shape[0]
    bias_gradient = layer.bias_gradient / scale
    raw = ((slope * probabilities).sum(0) - batch * bias_gradient) / slope.mean(0)
    return raw.clamp_min(0)


def solve_last_layer_and_labels(
    layer: LastLayer,
    initial_labels: Tensor,
    rounds: int = 3,
    tolerance: float = 1e-6,
    noise_level: float = 0.0,
    free_scale: bool = False,
) -> tuple[LastLayerSolution, Tensor]:
    """Solve the last layer while refining the batch's labels by self-consistency.

    Starting from ``initial_labels``, each round solves for the inputs, then re-estimates the
    per-class counts from those inputs (:func:`counts_from_inputs`); it stops when the residual is
    below ``tolerance`` (or the ``noise_level`` of a noisy update, passed to
    :func:`solve_last_layer`) or the labels repeat, and keeps the labels with the lowest residual.
    ``free_scale`` is passed to :func:`solve_last_layer`; on a clean update the counts come from
    the fit with the scale free where it was tried (taken or not: with wrong labels no scale
    fits exactly), the scale divided out.
    """
    labels = initial_labels
    if labels.numel() > layer.weight.shape[0]:  # more samples than classes: nothing to refine
        return solve_last_layer(layer, labels, noise_level=noise_level), labels
    best: tuple[LastLayerSolution, Tensor] | None = None
    seen: set[tuple[int, ...]] = set()
    for _ in range(rounds):
        seen.add(tuple(labels.tolist()))
        solution = solve_last_layer(layer, labels, noise_level=noise_level, free_scale=free_scale)
        if best is None or solution.residual < best[0].residual:
            best = (solution, labels)
        if solution.residual < max(tolerance, noise_level):
            break
        # wrong labels fit no scale exactly: on a clean update the scaled fit, where tried,
        # proposes the counts; on a noisy one it absorbs noise too, and its counts were no better
        # (defenses study: top-k 0.1 and pruning 0.9 lost a label or 0.5 dB)
        proposal = (solution.scaled_fit if noise_level == 0 else None) or solution
        raw = counts_from_inputs(layer, proposal.inputs, proposal.scale)
        present = layer.bias_gradient < 0
        labels = labels_from_counts(round_counts(raw.cpu(), present.cpu(), labels.numel()))
        if tuple(labels.tolist()) in seen:
            break
    assert best is not None
    return best
