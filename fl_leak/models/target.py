"""Networks from the user's own code: a ``_target_`` mapping, the Hydra way.

A model config names any importable callable that returns an ``nn.Module``, with its arguments::

    # my_configs/model/my_net.yaml  (fl-leak --config-dir my_configs model=my_net)
    # @package _global_
    model:
      _target_: my_package.nets.make_net
      _name_: my_net        # its name in records and reports (default: the callable's name)
      width: 16

The callable also receives ``input_shape`` and ``num_classes`` (the data set's) when its signature
takes them (or ``**kwargs``). Its module must be importable where the model is built: by the
server and by every client (``PYTHONPATH``, or an installed package).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_method, instantiate
from torch import nn

from fl_leak.errors import FlLeakError

TARGET_KEY = "_target_"
NAME_KEY = "_name_"

ModelSpec = str | Mapping[str, Any]


class ModelTargetError(FlLeakError):
    """A ``_target_`` model that cannot be imported, called, or is not a module."""


def is_target(spec: object) -> bool:
    """Whether ``spec`` is a ``_target_`` mapping (rather than a registered model's name)."""
    return isinstance(spec, Mapping) and TARGET_KEY in spec


def model_name(spec: ModelSpec) -> str:
    """The model's name in records: the registered name, ``_name_``, or the callable's name."""
    if isinstance(spec, str):
        return spec
    if not is_target(spec):
        raise ModelTargetError(f"model={dict(spec)!r} is neither a model name nor a {TARGET_KEY}")
    return str(spec.get(NAME_KEY) or str(spec[TARGET_KEY]).rsplit(".", 1)[-1])


def build_target(
    spec: Mapping[str, Any], input_shape: Sequence[int], num_classes: int
) -> nn.Module:
    """Call ``spec[_target_]`` with its arguments (and the data set's shape and classes)."""
    target = str(spec[TARGET_KEY])
    try:
        factory = get_method(target)
    except Exception as error:  # Hydra wraps import errors of every kind
        raise ModelTargetError(
            f"model {TARGET_KEY}={target!r} cannot be imported: {error}"
        ) from error
    arguments = {key: value for key, value in spec.items() if key != NAME_KEY}
    try:
        parameters = dict(inspect.signature(factory).parameters)
    except (TypeError, ValueError):  # a builtin without a signature: pass only what is given
        parameters = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    for key, value in (("input_shape", tuple(input_shape)), ("num_classes", num_classes)):
        if (takes_any or key in parameters) and key not in arguments:
            arguments[key] = value
    try:
        model = instantiate(arguments, _convert_="all")
    except InstantiationException as error:
        raise ModelTargetError(f"model {TARGET_KEY}={target!r} failed: {error}") from error
    if not isinstance(model, nn.Module):
        raise ModelTargetError(
            f"model {TARGET_KEY}={target!r} returned {type(model).__name__}, not an nn.Module"
        )
    return model
