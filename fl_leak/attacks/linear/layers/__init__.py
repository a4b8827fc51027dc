"""Layer adapters of the linear attack, one module per layer type.

Importing this package imports every module in it, and each registers its adapter (see
:mod:`~fl_leak.attacks.linear.layers.registry`): a new layer type is one new module here.
"""

import importlib
import pkgutil

from fl_leak.attacks.linear.layers.base import (
    ChannelAffine,
    Folded,
    LinearMap,
    Selection,
    Shape,
    WeightOperator,
)
from fl_leak.attacks.linear.layers.registry import (
    CHANNEL_AFFINES,
    LINEAR_MAPS,
    SELECTIONS,
    WEIGHT_LAYERS,
    channel_affine_for,
    layer_kind,
    linear_map_for,
    register_channel_affine,
    register_linear_map,
    register_selection,
    register_weight_layer,
    selection_for,
    supported_layer_names,
    weight_operator_for,
)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "CHANNEL_AFFINES",
    "LINEAR_MAPS",
    "SELECTIONS",
    "WEIGHT_LAYERS",
    "ChannelAffine",
    "Folded",
    "LinearMap",
    "Selection",
    "Shape",
    "WeightOperator",
    "channel_affine_for",
    "layer_kind",
    "linear_map_for",
    "register_channel_affine",
    "register_linear_map",
    "register_selection",
    "register_weight_layer",
    "selection_for",
    "supported_layer_names",
    "weight_operator_for",
]
