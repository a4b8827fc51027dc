"""Layer adapters of the linear attack; importing this package registers every adapter."""

from fl_leak.attacks.linear.layers import conv2d, linear, maps  # noqa: F401  (registration)
from fl_leak.attacks.linear.layers.base import Folded, LinearMap, Shape, WeightOperator
from fl_leak.attacks.linear.layers.registry import (
    linear_map_for,
    register_linear_map,
    register_weight_layer,
    supported_layer_names,
    weight_operator_for,
)

__all__ = [
    "Folded",
    "LinearMap",
    "Shape",
    "WeightOperator",
    "linear_map_for",
    "register_linear_map",
    "register_weight_layer",
    "supported_layer_names",
    "weight_operator_for",
]
