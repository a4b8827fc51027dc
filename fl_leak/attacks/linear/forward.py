"""Run a chain of blocks functionally, to produce the gradients a candidate input would give."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from fl_leak.attacks.linear.chain import Block


def block_outputs(blocks: Sequence[Block], x: Tensor) -> list[Tensor]:
    """Inputs of every block and the network output: ``[x_start, ..., x_L, s_L(z_L)]``."""
    outputs = [x]
    for block in blocks:
        z = block.operator.add_bias(block.operator.forward(outputs[-1]))
        outputs.append(block.output(z))
    return outputs


def chain_gradients(
    blocks: Sequence[Block], x: Tensor, labels: Tensor, create_graph: bool = False
) -> list[Tensor]:
    """Gradients of the batch-mean cross-entropy w.r.t. each block's weight (and bias).

    Returned in the order weight, bias (where its gradient is observed), block by block, matching
    :func:`observed_gradients`.
    """
    parameters: list[Tensor] = []
    out = x
    for block in blocks:
        weight = block.operator.weight.detach().requires_grad_(True)
        parameters.append(weight)
        z = block.operator.with_weight(weight).forward(out)
        if block.operator.bias is not None:
            bias = block.operator.bias.detach().requires_grad_(block.bias_gradient is not None)
            if block.bias_gradient is not None:
                parameters.append(bias)
            z = z + bias.reshape(-1, *([1] * (z.dim() - 2)))
        out = block.output(z)
    loss = F.cross_entropy(out, labels.to(out.device))
    return list(torch.autograd.grad(loss, parameters, create_graph=create_graph))


def observed_gradients(blocks: Sequence[Block]) -> list[Tensor]:
    """The observed gradients of the same blocks, in :func:`chain_gradients`' order."""
    observed: list[Tensor] = []
    for block in blocks:
        observed.append(block.weight_gradient)
        if block.operator.bias is not None and block.bias_gradient is not None:
            observed.append(block.bias_gradient)
    return observed
