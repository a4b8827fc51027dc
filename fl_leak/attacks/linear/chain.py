"""Read a model as the chain of blocks ``x_{l+1} = s_l(A_l x_l + b_l)`` that the attack solves.

Parameter-free linear layers (flatten, average pooling) are folded into the weight layer after
them; a per-channel affine layer (batch normalisation in evaluation mode) right after a weight
layer is folded into it, gradients included; max pooling right after a block's weight layer or
activation becomes that block's output stage. Anything else that is not a weight layer or a
supported activation is refused with an error naming the layer. A model that is not an
``nn.Sequential`` is accepted when its leaf modules, run in registration order, reproduce its
output (checked on a random input).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from fl_leak.attacks.linear.activations import (
    Activation,
    Identity,
    activation_for,
    supported_activation_names,
)
from fl_leak.attacks.linear.layers import (
    ChannelAffine,
    Folded,
    LinearMap,
    Selection,
    WeightOperator,
    channel_affine_for,
    layer_kind,
    linear_map_for,
    selection_for,
    supported_layer_names,
    weight_operator_for,
)
from fl_leak.attacks.linear.layers.linear import FullyConnectedOperator
from fl_leak.errors import (
    GradientMismatchError,
    InputShapeError,
    InvalidGradientError,
    UnsupportedLayerError,
)


@dataclass
class Block:
    """One weight layer (with the parameter-free maps folded in before it), its activation and,
    where the block pools, its max pooling (output ``pool(s(z))``).

    ``kind`` is the name its layer type is registered under (``conv2d``, ``linear``, ...).
    """

    index: int
    path: str
    kind: str
    operator: WeightOperator
    activation: Activation
    weight_gradient: Tensor
    bias_gradient: Tensor | None
    pool: Selection | None = None

    @property
    def core(self) -> WeightOperator:
        """The weight layer's own operator, without the maps folded in before it."""
        return self.operator.core if isinstance(self.operator, Folded) else self.operator

    def output(self, z: Tensor) -> Tensor:
        """The block's output from its pre-activation ``z``: ``s(z)``, pooled where it pools."""
        y = self.activation.forward(z)
        return self.pool.apply(y) if self.pool else y

    def valid_rows(self, z: Tensor) -> Tensor:
        """Forward rows usable at pre-activation ``z``: invertible activation outputs, and where
        the block pools, only at each window's maximum (positions read from ``z``)."""
        valid = self.activation.inverse(self.output(z)).valid
        if self.pool is None:
            return valid
        positions = self.pool.positions(z)
        return self.pool.scatter(valid.to(z.dtype), positions) > 0


@dataclass
class Chain:
    """The blocks of a model, its float64 copy for autograd, and the input shape."""

    blocks: list[Block]
    module: nn.Sequential
    input_shape: tuple[int, ...]

    @property
    def last(self) -> Block:
        return self.blocks[-1]


def _leaves(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    children = list(module.named_children())
    if not children:
        yield prefix or type(module).__name__, module
        return
    for name, child in children:
        yield from _leaves(child, f"{prefix}.{name}" if prefix else name)


def check_input_shape(model: nn.Module, input_shape: Sequence[int]) -> Tensor:
    """Run the model on a zero input of ``input_shape``; raise ``InputShapeError`` if it fails."""
    if not all(isinstance(s, int) and s > 0 for s in input_shape):
        raise InputShapeError(f"input_shape must be positive integers, got {tuple(input_shape)}")
    parameter = next(model.parameters(), None)
    dtype = parameter.dtype if parameter is not None else torch.float32
    try:
        with torch.no_grad():
            return model(torch.zeros(1, *input_shape, dtype=dtype))
    except RuntimeError as error:
        first_line = str(error).splitlines()[0]
        raise InputShapeError(
            f"input_shape {tuple(input_shape)} does not fit the model: {first_line}"
        ) from None


def check_gradients(model: nn.Module, gradients: Sequence[Tensor]) -> list[Tensor]:
    """Check gradients line up with ``model.parameters()`` and are finite; return them as a list."""
    parameters = list(model.parameters())
    gradients = list(gradients)
    if len(gradients) != len(parameters):
        raise GradientMismatchError(
            f"got {len(gradients)} gradient tensors for {len(parameters)} model parameters; "
            "pass one gradient per entry of model.parameters(), in that order"
        )
    names = [name for name, _ in model.named_parameters()]
    for name, parameter, gradient in zip(names, parameters, gradients, strict=True):
        if tuple(gradient.shape) != tuple(parameter.shape):
            raise GradientMismatchError(
                f"gradient for parameter '{name}' has shape {tuple(gradient.shape)}, "
                f"expected {tuple(parameter.shape)}"
            )
        if not torch.isfinite(gradient).all():
            bad = int((~torch.isfinite(gradient)).sum())
            raise InvalidGradientError(
                f"gradient for parameter '{name}' holds {bad} NaN/Inf values"
            )
    return gradients


def parse_chain(
    model: nn.Module,
    gradients: Sequence[Tensor],
    input_shape: Sequence[int],
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> Chain:
    """Validate ``model``, ``gradients`` and ``input_shape``, and build the chain of blocks."""
    for path, module in _leaves(model):  # before any forward pass, which would update them
        with _named(path, module):
            channel_affine_for(module)
    check_input_shape(model, input_shape)
    gradients = check_gradients(model, gradients)
    grad_of = {id(p): g for p, g in zip(model.parameters(), gradients, strict=True)}
    work = copy.deepcopy(model).to(dtype=dtype, device=device)
    leaves = list(_leaves(model))
    work_leaves = [module for _, module in _leaves(work)]

    def cast(t: Tensor) -> Tensor:
        return t.detach().to(dtype=dtype, device=device)

    blocks: list[Block] = []
    pending: list[LinearMap] = []
    shape = tuple(input_shape)
    open_block: dict[str, Any] | None = None

    def close(activation: Activation) -> None:
        nonlocal open_block
        assert open_block is not None
        open_block.pop("affine", None)
        blocks.append(Block(activation=activation, **open_block))
        open_block = None

    for path, module in leaves:
        with _named(path, module):
            affine = channel_affine_for(module)
            selection = selection_for(module, pending[-1].out_shape if pending else shape)
        if affine is not None:
            if open_block is None or open_block.get("affine") or open_block.get("pool"):
                raise UnsupportedLayerError(
                    path, module, "batch normalisation must follow a weight layer directly"
                )
            _fold_affine(open_block, affine, module, grad_of, cast)
            continue
        if selection is not None:
            if not pending and open_block is not None and "pool" not in open_block:
                open_block["pool"] = selection
            elif not pending and open_block is None and blocks and blocks[-1].pool is None:
                blocks[-1].pool = selection
            else:
                raise UnsupportedLayerError(
                    path,
                    module,
                    "max pooling must follow a weight layer or its activation directly (not the "
                    "model's input, another pooling or a linear map)",
                )
            shape = selection.out_shape
            continue
        weight = getattr(module, "weight", None)
        if isinstance(weight, nn.Parameter):
            if open_block is not None:
                close(Identity())
            bias = getattr(module, "bias", None)
            bias_param = bias if isinstance(bias, nn.Parameter) else None
            in_shape = pending[-1].out_shape if pending else shape
            with _named(path, module):
                core = weight_operator_for(
                    module,
                    in_shape,
                    cast(weight),
                    cast(bias_param) if bias_param is not None else None,
                )
            if core is None:
                raise UnsupportedLayerError(path, module, _supported())
            operator = Folded(pending, core) if pending else core
            open_block = {
                "index": len(blocks),
                "path": path,
                "kind": layer_kind(module),
                "operator": operator,
                "weight_gradient": cast(grad_of[id(weight)]),
                "bias_gradient": cast(grad_of[id(bias_param)]) if bias_param is not None else None,
            }
            pending, shape = [], core.out_shape
            continue
        if any(True for _ in module.parameters(recurse=False)):
            raise UnsupportedLayerError(path, module, _supported())
        activation = activation_for(module)
        if activation is not None and open_block is not None:
            close(activation)
            continue
        if isinstance(module, nn.Identity):
            continue
        linear_map = linear_map_for(module, pending[-1].out_shape if pending else shape)
        if linear_map is None:
            raise UnsupportedLayerError(path, module, _supported())
        if open_block is not None and not linear_map.commutes_with_activations:
            raise UnsupportedLayerError(
                path,
                module,
                "pooling between a weight layer and its activation; place it after the activation",
            )
        pending.append(linear_map)

    if open_block is not None:
        close(Identity())
    _check_ends(blocks, pending, leaves)
    chain = Chain(blocks, nn.Sequential(*work_leaves), tuple(input_shape))
    _check_sequential(model, chain)
    return chain


@contextmanager
def _named(path: str, module: nn.Module) -> Iterator[None]:
    """Re-raise an adapter's ``UnsupportedLayerError`` with the layer's path in the model; a
    layer that cannot take the output of the layers before it is not part of a chain."""
    try:
        yield
    except UnsupportedLayerError as error:
        raise UnsupportedLayerError(path, module, error.reason) from None
    except RuntimeError as error:
        raise UnsupportedLayerError(
            path,
            module,
            "it does not take the output of the layers registered before it (skip connections, "
            f"reuse, or functional ops): {str(error).splitlines()[0]}",
        ) from None


def _fold_affine(
    block: dict[str, Any],
    affine: ChannelAffine,
    module: nn.Module,
    grad_of: dict[int, Tensor],
    cast: Callable[[Tensor], Tensor],
) -> None:
    """Fold ``scale * z + shift`` into the open block's weight layer, and its gradients."""
    operator: WeightOperator = block["operator"]
    scale, shift = (cast(t) for t in affine.scale_and_shift())
    rows = scale.reshape(-1, *([1] * (operator.weight.dim() - 1)))
    bias = operator.bias if operator.bias is not None else torch.zeros_like(shift)
    block["operator"] = operator.with_weight(operator.weight * rows).with_bias(scale * bias + shift)
    block["weight_gradient"] = block["weight_gradient"] / rows
    beta = getattr(module, "bias", None)
    if block["bias_gradient"] is not None:
        block["bias_gradient"] = block["bias_gradient"] / scale
    elif isinstance(beta, nn.Parameter):
        block["bias_gradient"] = cast(grad_of[id(beta)])
    block["affine"] = True


def _supported() -> str:
    return (
        "supported layers: " + ", ".join(supported_layer_names()) + " and element-wise "
        "activations (" + ", ".join(supported_activation_names()) + ")"
    )


def _check_ends(
    blocks: list[Block], pending: list[LinearMap], leaves: list[tuple[str, nn.Module]]
) -> None:
    if not blocks:
        raise UnsupportedLayerError(
            "model", leaves[0][1] if leaves else nn.Identity(), "the model has no weight layer"
        )
    if pending:
        raise UnsupportedLayerError(
            blocks[-1].path, pending[-1], "a linear map after the last weight layer"
        )
    last = blocks[-1]
    if last.pool is not None:
        raise UnsupportedLayerError(last.path, last.operator, "max pooling after the last layer")
    if not isinstance(last.core, FullyConnectedOperator) or last.bias_gradient is None:
        raise UnsupportedLayerError(
            last.path, last.operator, "the last weight layer must be an nn.Linear with bias"
        )


def _check_sequential(model: nn.Module, chain: Chain) -> None:
    if isinstance(model, nn.Sequential):
        return
    generator = torch.Generator().manual_seed(0)
    probe = torch.rand(2, *chain.input_shape, generator=generator, dtype=torch.float64)
    reference = copy.deepcopy(model).double()
    with torch.no_grad():
        same = torch.allclose(
            reference(probe), copy.deepcopy(chain.module).double()(probe), atol=1e-8
        )
    if not same:
        raise UnsupportedLayerError(
            type(model).__name__,
            model,
            "its forward is not the chain of its layers in "
            "registration order (skip connections, reuse, or functional ops)",
        )
