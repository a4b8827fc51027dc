"""Correction by gradient matching: the second half of the ``hybrid`` attack.

Where a layer's system is rank-deficient, the least-squares walk returns the minimum-norm point of
an affine set of solutions. Every point of that set reproduces the observed gradients of the layer
and all layers above it exactly, so matching those gradients at that layer cannot choose among
them; what can is the information below it and prior knowledge of the input. The correction
therefore works on the model's input, from the least-squares reconstruction, minimising

    w_cos * sum_k (1 - cos(grad_k(x), G_k)) + w_res * ||U_a x_a - V_a||^2 / ||V_a||^2 + w_tv * TV(x)

over every weight and bias gradient ``k`` of the network, by projected Adam inside the data range;
the iterate with the lowest objective is kept. The residual term uses the *anchor* layer ``a``: the
lowest layer whose system was built from trustworthy layers above (all of them uniquely solved),
evaluated at the activation ``x_a`` that the candidate input produces. A system below a deficient
layer has a wrong right-hand side and would pull the input back toward the least-squares error.
Total variation is the image prior that decides what the gradients leave undetermined.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from fl_leak.attacks.linear.chain import Chain
from fl_leak.attacks.linear.forward import block_outputs, chain_gradients, observed_gradients
from fl_leak.attacks.linear.system import LayerSystem


@dataclass(frozen=True)
class CorrectionOptions:
    """Weights and schedule of the correction (see the module docstring)."""

    iterations: int = 1000
    lr: float = 0.05
    cos_weight: float = 1.0
    residual_weight: float = 1.0
    tv_weight: float = 0.1
    input_range: tuple[float, float] | None = (0.0, 1.0)


@dataclass
class CorrectionResult:
    """The corrected input and the objective before and after."""

    inputs: Tensor
    initial_objective: float
    final_objective: float
    iterations: int


def total_variation(x: Tensor) -> Tensor:
    """Anisotropic total variation: mean absolute difference of neighbouring pixels."""
    if x.dim() < 4:
        return x.new_zeros(())
    return (x[..., :, 1:] - x[..., :, :-1]).abs().mean() + (
        x[..., 1:, :] - x[..., :-1, :]
    ).abs().mean()


def cosine_distance(candidate: list[Tensor], observed: list[Tensor]) -> Tensor:
    """``sum_k (1 - cos(candidate_k, observed_k))`` over flattened tensors."""
    total = candidate[0].new_zeros(())
    for mine, theirs in zip(candidate, observed, strict=True):
        total = (
            total + 1 - F.cosine_similarity(mine.reshape(-1), theirs.reshape(-1), dim=0, eps=1e-30)
        )
    return total


def correct_input(
    chain: Chain,
    anchor: LayerSystem,
    anchor_index: int,
    start: Tensor,
    labels: Tensor,
    options: CorrectionOptions = CorrectionOptions(),
) -> CorrectionResult:
    """Refine the input reconstruction ``start`` by gradient matching (module docstring).

    ``anchor`` is the system of block ``anchor_index`` used in the residual term.
    """
    observed = [g.detach() for g in observed_gradients(chain.blocks)]
    rhs = anchor.rhs().detach()
    below = chain.blocks[:anchor_index]
    rhs_energy = (rhs @ rhs).clamp_min(1e-300)
    low, high = options.input_range if options.input_range else (None, None)

    def objective(x: Tensor) -> Tensor:
        gradients = chain_gradients(chain.blocks, x, labels, create_graph=True)
        residual = anchor.apply(block_outputs(below, x)[-1]) - rhs
        return (
            options.cos_weight * cosine_distance(gradients, observed)
            + options.residual_weight * (residual @ residual) / rhs_energy
            + options.tv_weight * total_variation(x)
        )

    x = start.detach().clone()
    if options.input_range:
        x = x.clamp(low, high)
    x.requires_grad_(True)
    optimiser = torch.optim.Adam([x], lr=options.lr)
    best, best_value = x.detach().clone(), float("inf")
    initial = None
    for _ in range(options.iterations):
        optimiser.zero_grad()
        value = objective(x)
        current = float(value.detach())
        if initial is None:
            initial = current
        if current < best_value:
            best, best_value = x.detach().clone(), current
        value.backward()
        optimiser.step()
        if options.input_range:
            with torch.no_grad():
                x.clamp_(low, high)
    final = float(objective(x).detach())
    if final < best_value:
        best, best_value = x.detach().clone(), final
    return CorrectionResult(best, float(initial or best_value), best_value, options.iterations)
