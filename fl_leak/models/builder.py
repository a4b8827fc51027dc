"""Build ``nn.Sequential`` networks from plain layer specs (what a config file holds).

A spec is a mapping with a ``type`` key and that layer's options; input channels and features are
inferred from the shapes, so a spec list reads like the architecture tables of papers::

    [{"type": "conv", "out_channels": 6, "kernel_size": 3},
     {"type": "act", "name": "tanh"},
     {"type": "flatten"},
     {"type": "linear", "out_features": 10},
     {"type": "act", "name": "identity"}]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

ACTIVATIONS: dict[str, Callable[..., nn.Module]] = {
    "identity": nn.Identity,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "softplus": nn.Softplus,
}


class SpecError(ValueError):
    """A layer spec that cannot be built; the message names the spec and the problem."""


def _build_activation(spec: Mapping[str, Any]) -> nn.Module:
    name = spec.get("name", "identity")
    if name not in ACTIVATIONS:
        raise SpecError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}")
    options = {k: v for k, v in spec.items() if k not in ("type", "name")}
    return ACTIVATIONS[name](**options)


def _layer(spec: Mapping[str, Any], shape: tuple[int, ...]) -> nn.Module:
    kind = spec.get("type")
    options = {k: v for k, v in spec.items() if k != "type"}
    if kind == "conv":
        if len(shape) != 3:
            raise SpecError(f"conv needs a (C, H, W) input, got shape {shape}")
        options.setdefault("bias", False)
        return nn.Conv2d(shape[0], **options)
    if kind == "linear":
        if len(shape) != 1:
            raise SpecError(f"linear needs a flat input, got shape {shape}; add a flatten spec")
        return nn.Linear(shape[0], **options)
    if kind == "flatten":
        return nn.Flatten()
    if kind == "avgpool":
        return nn.AvgPool2d(**options)
    if kind == "maxpool":
        return nn.MaxPool2d(**options)
    if kind == "batchnorm":
        return nn.BatchNorm2d(shape[0], **options)
    if kind == "act":
        return _build_activation(spec)
    raise SpecError(
        f"unknown layer type {kind!r} in spec {dict(spec)}; known: conv, linear, flatten, avgpool,"
        " maxpool, batchnorm, act"
    )


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
