"""The ``linear`` attack: the layerwise least-squares walk of Chen & Campbell, no correction."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from fl_leak.attacks.labels import recover_labels
from fl_leak.attacks.linear.chain import Chain, parse_chain
from fl_leak.attacks.linear.last_layer import solve_last_layer_and_labels
from fl_leak.attacks.linear.solver import SolverOptions
from fl_leak.attacks.linear.walk import LayerHook, WalkResult, last_layer_of, walk
from fl_leak.attacks.registry import register_attack
from fl_leak.attacks.result import Reconstruction
from fl_leak.errors import FlLeakError
from fl_leak.threads import DEFAULT_THREADS, torch_threads


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
    assert chain.last.bias_gradient is not None
    return chain, recover_labels(chain.last.bias_gradient, batch_size).cpu(), True


def run_walk(
    model: nn.Module,
    gradients: Sequence[Tensor],
    input_shape: tuple[int, ...],
    batch_size: int,
    labels: Tensor | None,
    tolerance: float = 1e-10,
    max_iterations: int = 20_000,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    hook: LayerHook | None = None,
) -> tuple[Chain, WalkResult, Tensor, bool]:
    """Shared by ``linear`` and ``hybrid``: parse, settle labels, walk the layers."""
    chain, labels, recovered = prepare(
        model, gradients, input_shape, batch_size, labels, dtype, device
    )
    labels = labels.to(chain.last.operator.weight.device)
    last = None
    if recovered and batch_size > 1:
        last, labels = solve_last_layer_and_labels(last_layer_of(chain), labels)
    options = SolverOptions(tolerance, max_iterations)
    result = walk(chain, labels, options, hook=hook, last_solution=last)
    return chain, result, labels, recovered


@register_attack("linear")
def linear_attack(
    model: nn.Module,
    gradients: Sequence[Tensor],
    input_shape: tuple[int, ...],
    batch_size: int = 1,
    labels: Tensor | None = None,
    threads: int | None = DEFAULT_THREADS,
    **options: Any,
) -> Reconstruction:
    """Solve each layer's stacked system in the least-squares sense, from the output layer down.

    Options: ``tolerance`` (LSMR's atol and btol, default 1e-10), ``max_iterations`` (20,000),
    ``dtype`` (torch.float64), ``device`` ("cpu"), ``threads`` (torch intra-op threads for the
    whole call, 1; None keeps torch's setting; see :mod:`fl_leak.threads`).
    """
    start = time.perf_counter()
    with torch_threads(threads):
        _, result, labels, recovered = run_walk(
            model, gradients, input_shape, batch_size, labels, **options
        )
    return Reconstruction(
        inputs=result.inputs[0].detach().cpu(),
        labels=labels,
        layers=result.layers,
        attack="linear",
        seconds=time.perf_counter() - start,
        labels_recovered=recovered,
        notes=[*result.last.notes, *result.notes],
    )
