"""Module type -> adapter factory, one registry per adapter kind.

Adding a layer type means one adapter module in this package that registers itself here; the
parser, the solver, the correction and the audit all find it through :func:`weight_operator_for`,
:func:`linear_map_for` and :func:`layer_kind`. The registration's name is the layer's ``kind`` in
diagnostics and audit tables (by default the module's class name in lower case: ``conv2d``,
``linear``).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from fl_leak.attacks.linear.layers.base import (
    ChannelAffine,
    LinearMap,
    Selection,
    Shape,
    WeightOperator,
)
from fl_leak.registry import Registry

WeightFactory = Callable[[nn.Module, Shape, Tensor, Tensor | None], WeightOperator]
MapFactory = Callable[[nn.Module, Shape], LinearMap]
SelectionFactory = Callable[[nn.Module, Shape], Selection]
AffineFactory = Callable[[nn.Module], ChannelAffine]

WEIGHT_LAYERS: Registry[type[nn.Module], WeightFactory] = Registry("weight layer type")
LINEAR_MAPS: Registry[type[nn.Module], MapFactory] = Registry("linear map type")
SELECTIONS: Registry[type[nn.Module], SelectionFactory] = Registry("selection type")
CHANNEL_AFFINES: Registry[type[nn.Module], AffineFactory] = Registry("channel affine type")


def register_weight_layer(
    module_type: type[nn.Module], name: str | None = None
) -> Callable[[WeightFactory], WeightFactory]:
    """Register ``factory(module, in_shape, weight, bias) -> WeightOperator`` for ``module_type``;
    ``name`` is its kind (default: the class name in lower case)."""
    return WEIGHT_LAYERS.register(module_type, name)


def register_linear_map(
    module_type: type[nn.Module], name: str | None = None
) -> Callable[[MapFactory], MapFactory]:
    """Register ``factory(module, in_shape) -> LinearMap`` for ``module_type``."""
    return LINEAR_MAPS.register(module_type, name)


def register_selection(
    module_type: type[nn.Module], name: str | None = None
) -> Callable[[SelectionFactory], SelectionFactory]:
    """Register ``factory(module, in_shape) -> Selection`` for ``module_type``."""
    return SELECTIONS.register(module_type, name)


def register_channel_affine(
    module_type: type[nn.Module], name: str | None = None
) -> Callable[[AffineFactory], AffineFactory]:
    """Register ``factory(module) -> ChannelAffine`` for ``module_type``; the factory raises
    ``UnsupportedLayerError`` where the module is not a fixed affine map (batch statistics)."""
    return CHANNEL_AFFINES.register(module_type, name)


def selection_for(module: nn.Module, in_shape: Shape) -> Selection | None:
    """The selection of ``module`` (max pooling), or None if it is not one."""
    factory = SELECTIONS.find(type(module))
    return factory(module, in_shape) if factory else None


def channel_affine_for(module: nn.Module) -> ChannelAffine | None:
    """The per-channel affine map of ``module`` (batch normalisation), or None."""
    factory = CHANNEL_AFFINES.find(type(module))
    return factory(module) if factory else None


def weight_operator_for(
    module: nn.Module, in_shape: Shape, weight: Tensor, bias: Tensor | None
) -> WeightOperator | None:
    """The weight operator of ``module`` with these parameters; None if not a weight layer."""
    factory = WEIGHT_LAYERS.find(type(module))
    return factory(module, in_shape, weight, bias) if factory else None


def linear_map_for(module: nn.Module, in_shape: Shape) -> LinearMap | None:
    """The linear map of a parameter-free ``module``, or None if it is not one."""
    factory = LINEAR_MAPS.find(type(module))
    return factory(module, in_shape) if factory else None


def layer_kind(module: nn.Module) -> str:
    """The registered name of a weight layer's type (``conv2d``, ``linear``, ...)."""
    return WEIGHT_LAYERS.name_of(type(module))


def supported_layer_names() -> list[str]:
    """Class names of every module type the linear attack accepts (for error messages)."""
    kinds = (*WEIGHT_LAYERS, *LINEAR_MAPS, *SELECTIONS, *CHANNEL_AFFINES)
    return sorted(t.__name__ for t in kinds)
