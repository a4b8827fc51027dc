"""Name -> network registry: the paper's family and any network registered by a plug-in."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from fl_leak.models.builder import build_from_specs
from fl_leak.models.family import FAMILY

ModelFactory = Callable[[Sequence[int], int], nn.Module]

_REGISTRY: dict[str, ModelFactory] = {}


class UnknownModelError(KeyError):
    """A model name that no factory is registered under."""

    def __str__(self) -> str:
        return str(self.args[0])


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Register ``factory(input_shape, num_classes) -> nn.Module`` under ``name``."""

    def decorate(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ValueError(f"a model named {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return decorate


def list_models() -> list[str]:
    """Every registered model name, sorted."""
    return sorted(_REGISTRY)


def build_model(
    name: str,
    input_shape: Sequence[int] = (3, 32, 32),
    num_classes: int = 10,
    seed: int | None = None,
) -> nn.Module:
    """Build the network registered as ``name``; ``seed`` makes its initial weights reproducible.

    >>> build_model("cnn2_c1", seed=0)(torch.zeros(1, 3, 32, 32)).shape
    torch.Size([1, 10])
    """
    if name not in _REGISTRY:
        raise UnknownModelError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    if seed is None:
        return _REGISTRY[name](tuple(input_shape), num_classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _REGISTRY[name](tuple(input_shape), num_classes)


def _family_factory(name: str) -> ModelFactory:
    def factory(input_shape: Sequence[int], num_classes: int) -> nn.Module:
        return build_from_specs(FAMILY[name].specs(num_classes), input_shape)

    return factory


for _name in FAMILY:
    register_model(_name)(_family_factory(_name))
