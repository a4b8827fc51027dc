"""The layerwise walk: solve the last layer, then each layer's stacked system from the top down."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

from torch import Tensor

from fl_leak.attacks.linear.activations import KINK, LeakyReLU
from fl_leak.attacks.linear.chain import Block, Chain
from fl_leak.attacks.linear.last_layer import LastLayer, LastLayerSolution, solve_last_layer
from fl_leak.attacks.linear.noise import (
    FLAT,
    FLAT_MARGIN,
    NoiseOptions,
    NoisySolveReport,
    flat_solution,
    forward_weights,
    gradient_mismatch,
    grey_inputs,
    noisy_update,
    project_to_range,
    solve_discrepancy,
    solve_tikhonov,
)
from fl_leak.attacks.linear.pooling import PoolingReport, solve_pooled
from fl_leak.attacks.linear.preconditioner import NormalPreconditioner
from fl_leak.attacks.linear.solver import SolveReport, SolverOptions, solve_layer
from fl_leak.attacks.linear.system import LayerSystem
from fl_leak.attacks.result import LayerDiagnostics


@dataclass
class WalkResult:
    """Per-layer inputs (index 0 is the model's input) and diagnostics, from the input up."""

    inputs: list[Tensor]
    systems: list[LayerSystem]
    layers: list[LayerDiagnostics]
    last: LastLayerSolution
    notes: list[str] = field(default_factory=list)  # layers below the last left undetermined
    # the noisy solves' Tikhonov factorisations by block index, for another walk to reuse
    factors: dict[int, NormalPreconditioner] = field(default_factory=dict)


def last_layer_of(chain: Chain) -> LastLayer:
    """The server's knowledge of the chain's last (fully connected) layer."""
    block = chain.last
    assert block.operator.bias is not None and block.bias_gradient is not None
    return LastLayer(
        block.operator.weight,
        block.operator.bias,
        block.activation,
        block.weight_gradient,
        block.bias_gradient,
    )


def _last_layer_diagnostics(
    block: Block, solution: LastLayerSolution, seconds: float, batch: int
) -> LayerDiagnostics:
    features = block.operator.weight.shape[1]
    return LayerDiagnostics(
        index=block.index,
        path=block.path,
        kind=block.kind,
        activation=block.activation.name,
        unknowns=batch * features,
        forward_equations=0,
        gradient_equations=block.weight_gradient.numel(),
        deficiency_bound=(batch - solution.rank) * features,
        residual=solution.residual,
        condition_estimate=solution.condition,
        stop_reason="closed form"
        if batch == 1
        else "Levenberg-Marquardt on row-space coefficients",
        seconds=seconds,
    )


def deficiency_note(system: LayerSystem, diagnostics: LayerDiagnostics) -> str | None:
    """A note for a layer whose system leaves unknowns undetermined, or None.

    For a ReLU layer the forward rows are those of the units active in the reconstructed output
    above, so the deficiency is that of this data's active set (a random probe of the audit may
    activate more units and call the same layer full rank).
    """
    if diagnostics.deficiency_bound <= 0:
        return None
    note = (
        f"layer {diagnostics.index} ({diagnostics.kind}, {diagnostics.activation}): at least "
        f"{diagnostics.deficiency_bound} of {diagnostics.unknowns} unknowns not determined"
    )
    if diagnostics.activation == "relu":
        note += (
            f" at the reconstructed active set ({system.forward_equations} of "
            f"{system.num_forward_rows} units active)"
        )
    return note + "; minimum-norm least-squares solution"


def pooling_note(block: Block, pooling: PoolingReport) -> str | None:
    """A note for a max-pooling block whose positions do not explain the data."""
    if pooling.settled:
        return None
    return (
        f"layer {block.index} ({block.kind}, max pooling): positions not settled after "
        f"{pooling.rounds} solves (the solution puts the maximum at the chosen position in "
        f"{pooling.consistent} of {pooling.windows} windows; relative residual "
        f"{pooling.residual:.1e}); the layer's system rests on estimated positions"
    )


def _solve_noisy(
    system: LayerSystem,
    noise: NoiseOptions,
    level: float,
    options: SolverOptions,
    initial: Tensor | None,
    reuse: NormalPreconditioner | None,
    flat: Tensor | None,
) -> tuple[Tensor, NoisySolveReport, NormalPreconditioner | None]:
    """A noisy layer's solve: Tikhonov where its factorisation applies (``reuse``: another
    walk's factorisation of this layer), towards ``flat`` (the input layer's flat input) where
    given, else towards ``initial``; elsewhere CGLS from ``initial`` stopped by the discrepancy
    principle. Also the factorisation used."""
    if noise.tikhonov_weight > 0:
        centre = flat if flat is not None else initial
        solved = solve_tikhonov(
            system, noise.tikhonov_weight * level**2, centre, options.tolerance, reuse
        )
        if solved is not None:
            return solved
    return *solve_discrepancy(system, noise, options.max_iterations, initial), None


def walk(
    chain: Chain,
    labels: Tensor,
    options: SolverOptions = SolverOptions(),
    last_solution: LastLayerSolution | None = None,
    pool_rounds: int = 20,
    pool_restarts: int = 0,
    noise: NoiseOptions = NoiseOptions(),
    reuse: dict[int, NormalPreconditioner] | None = None,
) -> WalkResult:
    """Reconstruct every layer's input, from the last layer down to the model's input.

    ``last_solution`` skips the last layer's solve when it was already done (label search);
    ``pool_rounds`` bounds the solves that settle a max-pooling block's positions from each of
    ``1 + pool_restarts`` starts (:func:`~fl_leak.attacks.linear.pooling.solve_pooled`).
    An update whose noise level (:func:`~fl_leak.attacks.linear.noise.update_noise_level`) is
    above ``noise.noise_threshold`` is walked noise-aware (:mod:`fl_leak.attacks.linear.noise`);
    ``reuse``, another walk's Tikhonov factorisations by block index (the result's
    ``factors``), precondition this walk's solves of the same layers.
    """
    reuse = reuse or {}
    factors: dict[int, NormalPreconditioner] = {}
    start = time.perf_counter()
    last = chain.last
    batch = labels.numel()
    level, noisy = noisy_update(last.weight_gradient, batch, noise)
    solution = last_solution or solve_last_layer(
        last_layer_of(chain),
        labels,
        noise_level=level if noisy else 0.0,
        free_scale=noise.free_scale,
    )
    x_above = solution.inputs.reshape(batch, *last.operator.in_shape)
    d_above = solution.output_gradients
    block_above = last
    inputs, systems, notes = [x_above], [], []
    layers = [_last_layer_diagnostics(last, solution, time.perf_counter() - start, batch)]
    layers[0].noise_level = level
    starts: list[Tensor | None] = [None] * len(chain.blocks)
    if noisy and noise.input_range is not None:
        starts = list(grey_inputs(chain, batch, noise.input_range))
    for block in reversed(chain.blocks[:-1]):
        start = time.perf_counter()
        if noisy:
            x_above = project_to_range(block.activation, x_above)
        inversion = block.activation.inverse(x_above)
        d = block.activation.derivative(x_above) * block_above.operator.forward_adjoint(d_above)
        pooling = None
        report: SolveReport
        found = math.nan  # the inconsistency a noise-aware solve finds
        if block.pool is not None:
            x, system, report, pooling = solve_pooled(
                block, inversion, d, options, pool_rounds, pool_restarts
            )
            d = system.output_gradient
        else:
            bias = block.operator.add_bias(x_above.new_zeros(1, *block.operator.out_shape))
            system = LayerSystem(
                operator=block.operator,
                output_gradient=d,
                observed_gradient=block.weight_gradient,
                target=inversion.pre_activation - bias,
                valid=inversion.valid,
            )
            if noisy:
                flat = None
                if block is chain.blocks[0]:
                    weights = forward_weights(block.activation, x_above)
                    flat = flat_solution(replace(system, forward_weight=weights))
                x, report, factor = _solve_noisy(
                    system,
                    noise,
                    level,
                    options,
                    starts[block.index],
                    reuse.get(block.index),
                    flat,
                )
                if factor is not None:
                    factors[block.index] = factor
                found = report.noise_level
                if flat is not None:
                    mismatch = gradient_mismatch(chain, x, labels)
                    if FLAT_MARGIN * gradient_mismatch(chain, flat, labels) < mismatch:
                        x, report.stop_reason = flat, report.stop_reason + FLAT
            else:
                x, report = solve_layer(system, options)
        diagnostics = LayerDiagnostics(
            index=block.index,
            path=block.path,
            kind=block.kind,
            activation=block.activation.name,
            unknowns=system.num_unknowns,
            forward_equations=system.forward_equations,
            gradient_equations=system.num_gradient_rows,
            deficiency_bound=system.deficiency_bound(),
            clipped=inversion.clipped,
            residual=report.residual,
            iterations=report.iterations,
            stop_reason=report.stop_reason,
            solver=report.method,
            condition_estimate=report.condition_estimate,
            noise_level=found,
        )
        if pooling is not None:
            diagnostics.pool_windows = pooling.windows
            diagnostics.pool_consistent = pooling.consistent
            diagnostics.pool_rounds = pooling.rounds
            note = pooling_note(block, pooling)
            if note is not None:
                notes.append(note)
        diagnostics.seconds = time.perf_counter() - start
        inputs.append(x)
        systems.append(system)
        layers.append(diagnostics)
        note = deficiency_note(system, diagnostics)
        if note is not None:
            notes.append(note)
        # a reconstructed ReLU's inactive units are rounding noise around 0: no side to lose
        activation = block.activation
        leaky = isinstance(activation, LeakyReLU) and activation.slope != 0
        near_kink = activation.near_kink(x_above) if leaky else 0
        diagnostics.near_kink = near_kink
        if near_kink:
            notes.append(
                f"layer {block.index} ({block.activation.name}): {near_kink} reconstructed "
                f"outputs within {KINK:g} of the largest of the kink; their side, and so their "
                "derivative below, is decided by rounding and may be wrong"
            )
        x_above, d_above, block_above = x, d, block
    inputs.reverse()
    systems.reverse()
    layers.reverse()
    notes.reverse()
    return WalkResult(inputs, systems, layers, solution, notes, factors)
