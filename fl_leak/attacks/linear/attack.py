"""The ``linear`` attack: the layerwise least-squares walk of Chen & Campbell, no correction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fl_leak.attacks.labels import batch_labels
from fl_leak.attacks.linear.chain import Chain, parse_chain
from fl_leak.attacks.linear.last_layer import LastLayerSolution, solve_last_layer_and_labels
from fl_leak.attacks.linear.noise import (
    COPY_SEEDS,
    SHRUNK,
    NoiseOptions,
    chain_gradients,
    noisy_copy,
    noisy_update,
    shrink_note,
    shrink_towards_grey,
)
from fl_leak.attacks.linear.preconditioner import NormalPreconditioner
from fl_leak.attacks.linear.solver import SOLVE_METHODS, SolverOptions
from fl_leak.attacks.linear.walk import WalkResult, last_layer_of, walk
from fl_leak.attacks.registry import register_attack
from fl_leak.attacks.result import Reconstruction
from fl_leak.errors import FlLeakError
from fl_leak.options import (
    check_non_negative_int,
    check_one_of,
    check_positive,
    check_positive_int,
    torch_device,
    torch_dtype,
)
from fl_leak.threads import DEFAULT_THREADS, check_threads


@dataclass(frozen=True)
class LinearOptions(SolverOptions, NoiseOptions):
    """Options of ``linear``: LSMR's (:class:`~fl_leak.attacks.linear.solver.SolverOptions`), the
    noise-aware solve's (:class:`~fl_leak.attacks.linear.noise.NoiseOptions`: ``noise_aware``,
    ``noise_threshold``, ``discrepancy``, ``stagnation``, ``stagnation_window``) and where the
    walk runs.

    Attributes
    ----------
    tolerance : float
        LSMR's ``atol`` and ``btol`` (> 0).
    max_iterations : int
        The solver's iteration limit per layer (>= 1).
    method : "auto", "lsmr" or "cgls"
        The layer solver (:class:`~fl_leak.attacks.linear.solver.SolverOptions`): "auto" uses CGLS
        preconditioned by the layer's normal matrix where that applies and is cheap (full-rank
        convolution layers), LSMR elsewhere.
    threads : int or None
        Torch intra-op threads for the whole attack (>= 1; :mod:`fl_leak.threads`); None keeps
        torch's setting.
    dtype : "float64", "float32" or the torch dtype
        Precision of the walk.
    device : str or torch.device
        Where the walk runs.
    pool_rounds : int
        Solves per start of a max-pooling layer to settle the positions of its maxima (>= 1;
        :mod:`~fl_leak.attacks.linear.pooling`).
    pool_restarts : int
        Further starts from seeded random positions where the first ends at a residual
        (>= 0).
    """

    threads: int | None = DEFAULT_THREADS
    dtype: str | torch.dtype = "float64"
    device: str | torch.device = "cpu"
    pool_rounds: int = 20
    pool_restarts: int = 3

    def __post_init__(self) -> None:
        check_positive("tolerance", self.tolerance)
        check_positive_int("max_iterations", self.max_iterations)
        check_one_of("method", self.method, SOLVE_METHODS)
        check_positive_int("pool_rounds", self.pool_rounds)
        check_non_negative_int("pool_restarts", self.pool_restarts)
        check_threads(self.threads)
        self.check_noise_options()
        torch_dtype(self.dtype)
        torch_device(self.device)


def prepare(
    model: nn.Module,
    gradients: Sequence[Tensor],
    input_shape: tuple[int, ...],
    batch_size: int,
    labels: Tensor | None,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
) -> tuple[Chain, Tensor, bool]:
    """Validate the inputs, parse the chain and settle the labels (given or recovered)."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise FlLeakError(f"batch_size must be a positive integer, got {batch_size!r}")
    chain = parse_chain(model, gradients, input_shape, dtype=dtype, device=device)
    if labels is not None:
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        if labels.numel() != batch_size:
            raise FlLeakError(f"got {labels.numel()} labels for batch_size={batch_size}")
        return chain, labels, False
    return chain, batch_labels(last_layer_of(chain), batch_size), True


def run_walk(
    model: nn.Module,
    gradients: Sequence[Tensor],
    input_shape: tuple[int, ...],
    batch_size: int,
    labels: Tensor | None,
    options: LinearOptions,
) -> tuple[Chain, WalkResult, Tensor, bool]:
    """Shared by ``linear`` and ``hybrid``: parse, settle labels, walk the layers."""
    chain, labels, recovered = prepare(
        model,
        gradients,
        input_shape,
        batch_size,
        labels,
        torch_dtype(options.dtype),
        torch_device(options.device),
    )
    labels = labels.to(chain.last.operator.weight.device)
    last = None
    if recovered and batch_size > 1:
        level, noisy = noisy_update(chain.last.weight_gradient, batch_size, options)
        last, labels = solve_last_layer_and_labels(
            last_layer_of(chain),
            labels,
            noise_level=level if noisy else 0.0,
            free_scale=options.free_scale,
        )
    result = _walk(chain, labels, options, last)
    if (
        options.shrink
        and options.input_range
        and (result.layers[-1].noise_level > options.noise_threshold)
    ):
        _shrink_towards_grey(chain, result, labels, batch_size, options, options.input_range)
    return chain, result, labels, recovered


def _walk(
    chain: Chain,
    labels: Tensor,
    options: LinearOptions,
    last: LastLayerSolution | None,
    reuse: dict[int, NormalPreconditioner] | None = None,
) -> WalkResult:
    return walk(
        chain,
        labels,
        options,
        last,
        options.pool_rounds,
        options.pool_restarts,
        noise=options,
        reuse=reuse,
    )


def _shrink_towards_grey(
    chain: Chain,
    result: WalkResult,
    labels: Tensor,
    batch_size: int,
    options: LinearOptions,
    input_range: tuple[float, float],
) -> None:
    """Shrink a noisy walk's input towards grey, in place: the error per band is measured by
    two more walks, of the update and of the clamped estimate's own gradients, each with a
    fresh draw of the noise (:func:`~fl_leak.attacks.linear.noise.shrink_towards_grey`)."""
    estimate = result.inputs[0]
    reference = estimate.clamp(*input_range)
    observed = [(block.weight_gradient, block.bias_gradient) for block in chain.blocks]
    synthetic = chain_gradients(chain, reference, labels)
    errors = []
    for copy, truth in (
        (noisy_copy(chain, observed, batch_size, COPY_SEEDS[0]), estimate),
        (noisy_copy(chain, list(synthetic), batch_size, COPY_SEEDS[1]), reference),
    ):
        repeat = _walk(copy, labels, options, None, result.factors)
        errors.append(repeat.inputs[0].reshape(estimate.shape) - truth)
    shrinkage = shrink_towards_grey(estimate, errors, input_range)
    result.inputs[0] = shrinkage.inputs
    result.layers[0].stop_reason += f"{SHRUNK} (weight {shrinkage.weight:.2f})"
    result.notes.append(shrink_note(shrinkage))


def check_chain(model: nn.Module, input_shape: tuple[int, ...]) -> None:
    """Raise :class:`~fl_leak.errors.UnsupportedLayerError` (or another ``FlLeakError``) where
    ``model`` is not a chain of layers the linear attack expresses."""
    zeros = [torch.zeros_like(parameter) for parameter in model.parameters()]
    parse_chain(model, zeros, input_shape)


@register_attack("linear", LinearOptions, accepts=check_chain)
def linear_attack(
    model: nn.Module,
    gradients: Sequence[Tensor],
    input_shape: tuple[int, ...],
    batch_size: int,
    labels: Tensor | None,
    options: LinearOptions,
) -> Reconstruction:
    """Solve each layer's stacked system in the least-squares sense, from the output layer down.

    Options: the fields of :class:`LinearOptions`: ``tolerance`` (the solver's atol and btol,
    default 1e-10), ``max_iterations`` (20,000), ``method`` ("auto"), the noise-aware solve's
    (``noise_aware``, on, and its settings), ``threads`` (torch threads for the whole attack, 1;
    None keeps torch's setting), ``dtype`` (float64), ``device`` ("cpu"), ``pool_rounds`` (20),
    ``pool_restarts`` (3).
    """
    _, result, labels, recovered = run_walk(
        model, gradients, input_shape, batch_size, labels, options
    )
    return Reconstruction(
        inputs=result.inputs[0].detach().cpu(),
        labels=labels,
        layers=result.layers,
        attack="linear",
        labels_recovered=recovered,
        notes=[*result.last.notes, *result.notes],
    )
