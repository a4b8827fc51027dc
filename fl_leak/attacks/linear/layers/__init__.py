"""Layer adapters of the linear attack, one module per layer type.

Importing this package imports every module in it, and each registers its adapter (see
:mod:`~fl_leak.attacks.linear.layers.registry`): a new layer type is one new module here.
"""

import importlib
import pkgutil

from fl_leak.attacks.linear.layers.base import Folded, LinearMap, Shape, WeightOperator
from fl_leak.attacks.linear.layers.registry import (
    LINEAR_MAPS,
    WEIGHT_LAYERS,
    layer_kind,
    linear_map_for,
    register_linear_map,
    register_weight_layer,
    supported_layer_names,
    weight_operator_for,
)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "LINEAR_MAPS",
    "WEIGHT_LAYERS",
    "Folded",
    "LinearMap",
    "Shape",
    "WeightOperator",
    "layer_kind",
    "linear_map_for",
    "register_linear_map",
    "register_weight_layer",
    "supported_layer_names",
    "weight_operator_for",
]
