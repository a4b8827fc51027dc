"""Name -> network registry: the paper's family and any network registered by a plug-in."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from fl_leak.errors import UnknownModelError
from fl_leak.models.target import ModelSpec, build_target, is_target
from fl_leak.registry import Registry

ModelFactory = Callable[[Sequence[int], int], nn.Module]

MODELS: Registry[str, ModelFactory] = Registry("model", error=UnknownModelError)


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Register ``factory(input_shape, num_classes) -> nn.Module`` under ``name``."""
    return MODELS.register(name)


def list_models() -> list[str]:
    """Every registered model name, sorted."""
    return MODELS.names()


def build_model(
    name: ModelSpec,
    input_shape: Sequence[int] = (3, 32, 32),
    num_classes: int = 10,
    seed: int | None = None,
) -> nn.Module:
    """Build the network registered as ``name``, or the one a ``_target_`` mapping names (see
    :mod:`fl_leak.models.target`); ``seed`` makes its initial weights reproducible.

    >>> build_model("cnn2_c1", seed=0)(torch.zeros(1, 3, 32, 32)).shape
    torch.Size([1, 10])
    """
    if is_target(name):
        assert not isinstance(name, str)
        spec = name

        def build() -> nn.Module:
            return build_target(spec, input_shape, num_classes)

    else:
        factory = MODELS.get(str(name))

        def build() -> nn.Module:
            return factory(tuple(input_shape), num_classes)

    if seed is None:
        return build()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


__all__ = [
    "MODELS",
    "ModelFactory",
    "UnknownModelError",
    "build_model",
    "list_models",
    "register_model",
]
