"""Module type -> adapter factory, one registry per adapter kind.

Adding a layer type means one adapter module that registers itself here; the parser, the solver,
the correction and the audit all find it through :func:`weight_operator_for` and
:func:`linear_map_for`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch import Tensor, nn

from fl_leak.attacks.linear.layers.base import LinearMap, Shape, WeightOperator

WeightFactory = Callable[[nn.Module, Shape, Tensor, Tensor | None], WeightOperator]
MapFactory = Callable[[nn.Module, Shape], LinearMap]
F = TypeVar("F")

WEIGHT_LAYERS: dict[type[nn.Module], WeightFactory] = {}
LINEAR_MAPS: dict[type[nn.Module], MapFactory] = {}


def _register(table: dict[type[nn.Module], F], module_type: type[nn.Module]) -> Callable[[F], F]:
    def decorate(factory: F) -> F:
        if module_type in table:
            raise ValueError(f"an adapter for {module_type.__name__} is already registered")
        table[module_type] = factory
        return factory

    return decorate


def register_weight_layer(module_type: type[nn.Module]) -> Callable[[WeightFactory], WeightFactory]:
    """Register ``factory(module, in_shape, weight, bias) -> WeightOperator``."""
    return _register(WEIGHT_LAYERS, module_type)


def register_linear_map(module_type: type[nn.Module]) -> Callable[[MapFactory], MapFactory]:
    """Register ``factory(module, in_shape) -> LinearMap``."""
    return _register(LINEAR_MAPS, module_type)


def weight_operator_for(
    module: nn.Module, in_shape: Shape, weight: Tensor, bias: Tensor | None
) -> WeightOperator | None:
    """The weight operator of ``module`` with these parameters; None if not a weight layer."""
    factory = WEIGHT_LAYERS.get(type(module))
    return factory(module, in_shape, weight, bias) if factory else None


def linear_map_for(module: nn.Module, in_shape: Shape) -> LinearMap | None:
    """The linear map of a parameter-free ``module``, or None if it is not one."""
    factory = LINEAR_MAPS.get(type(module))
    return factory(module, in_shape) if factory else None


def supported_layer_names() -> list[str]:
    """Names of every module type the linear attack accepts (for error messages)."""
    return sorted(t.__name__ for t in (*WEIGHT_LAYERS, *LINEAR_MAPS))
