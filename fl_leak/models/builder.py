"""Build ``nn.Sequential`` networks from plain layer specs (what a config file holds).

A spec is a mapping with a ``type`` key and that layer's options; input channels and features are
inferred from the shapes, so a spec list reads like the architecture tables of papers::

    [{"type": "conv", "out_channels": 6, "kernel_size": 3},
     {"type": "act", "name": "tanh"},
     {"type": "flatten"},
     {"type": "linear", "out_features": 10},
     {"type": "act", "name": "identity"}]

A layer type is built by the function registered under its ``type`` with
:func:`register_layer_spec`; the built-in ones are torch's own layers below. Activations
(``{"type": "act", "name": ...}``) are those of the attack's activation table,
:data:`fl_leak.attacks.linear.activations.ACTIVATIONS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from fl_leak.attacks.linear.activations import activation_module
from fl_leak.errors import FlLeakError, UnknownNameError
from fl_leak.registry import Registry

Shape = tuple[int, ...]
# builder(options, input_shape) -> the layer; options are the spec's keys less ``type``
SpecBuilder = Callable[[dict[str, Any], Shape], nn.Module]


class SpecError(FlLeakError):
    """A layer spec that cannot be built; the message names the spec and the problem."""


LAYER_SPECS: Registry[str, SpecBuilder] = Registry("layer type", error=SpecError)


def register_layer_spec(name: str) -> Callable[[SpecBuilder], SpecBuilder]:
    """Register ``builder(options, input_shape) -> nn.Module`` for specs of ``type`` ``name``."""
    return LAYER_SPECS.register(name)


@register_layer_spec("conv")
def _conv(options: dict[str, Any], shape: Shape) -> nn.Module:
    if len(shape) != 3:
        raise SpecError(f"conv needs a (C, H, W) input, got shape {shape}")
    options.setdefault("bias", False)
    return nn.Conv2d(shape[0], **options)


@register_layer_spec("linear")
def _linear(options: dict[str, Any], shape: Shape) -> nn.Module:
    if len(shape) != 1:
        raise SpecError(f"linear needs a flat input, got shape {shape}; add a flatten spec")
    return nn.Linear(shape[0], **options)


@register_layer_spec("flatten")
def _flatten(options: dict[str, Any], shape: Shape) -> nn.Module:
    return nn.Flatten(**options)


@register_layer_spec("avgpool")
def _avgpool(options: dict[str, Any], shape: Shape) -> nn.Module:
    return nn.AvgPool2d(**options)


@register_layer_spec("maxpool")
def _maxpool(options: dict[str, Any], shape: Shape) -> nn.Module:
    return nn.MaxPool2d(**options)


@register_layer_spec("batchnorm")
def _batchnorm(options: dict[str, Any], shape: Shape) -> nn.Module:
    return nn.BatchNorm2d(shape[0], **options)


@register_layer_spec("act")
def _activation(options: dict[str, Any], shape: Shape) -> nn.Module:
    name = options.pop("name", "identity")
    try:
        module_type = activation_module(name)
    except UnknownNameError as error:
        raise SpecError(str(error)) from None
    return module_type(**options)


def _layer(spec: Mapping[str, Any], shape: Shape) -> nn.Module:
    options = {k: v for k, v in spec.items() if k != "type"}
    return LAYER_SPECS.get(spec.get("type", ""))(options, shape)


def build_from_specs(
    specs: Sequence[Mapping[str, Any]], input_shape: Sequence[int] = (3, 32, 32)
) -> nn.Sequential:
    """Build an ``nn.Sequential`` from layer specs, inferring each layer's input size.

    >>> net = build_from_specs([{"type": "flatten"}, {"type": "linear", "out_features": 10}],
    ...                        input_shape=(1, 4, 4))
    >>> net(torch.zeros(2, 1, 4, 4)).shape
    torch.Size([2, 10])
    """
    layers: list[nn.Module] = []
    probe = torch.zeros(1, *input_shape)
    for index, spec in enumerate(specs):
        try:
            layer = _layer(spec, tuple(probe.shape[1:]))
            probe = layer(probe)
        except SpecError as error:
            raise SpecError(f"layer spec #{index}: {error}") from None
        except (RuntimeError, TypeError) as error:
            raise SpecError(f"layer spec #{index} {dict(spec)}: {error}") from None
        layers.append(layer)
    return nn.Sequential(*layers)
