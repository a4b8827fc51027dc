"""A data set from the user's own code: a ``_target_`` factory, the Hydra way.

A data config names any importable callable that returns a ``torch.utils.data.Dataset`` of
``(image, label)`` pairs: images as float tensors ``(C, H, W)`` in [0, 1] (or uint8), labels as
integers. It receives ``train`` (True for the training split, False for the held-out one) when its
signature takes it, and its other arguments from the YAML::

    # my_configs/data/my_data.yaml  (fl-leak --config-dir my_configs data=my_data)
    name: my_data
    factory:
      _target_: my_package.data.make_split
      size: 500

Images are stored as 8-bit, like every data set of fl-leak (scores compare with those values);
class names are the data set's ``classes`` if it has them, else the label numbers.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from hydra.utils import get_method, instantiate

from fl_leak.data.base import DatasetInfo, ImageDataset
from fl_leak.errors import FlLeakError

TARGET_KEY = "_target_"


class DataTargetError(FlLeakError):
    """A ``_target_`` data set that cannot be imported, called, or read as labelled images."""


def _to_uint8(image: Any, index: int, target: str) -> torch.Tensor:
    tensor = torch.as_tensor(image)
    if tensor.dtype == torch.uint8:
        return tensor
    if not torch.is_floating_point(tensor) or tensor.min() < 0 or tensor.max() > 1:
        raise DataTargetError(
            f"data factory {target!r}: sample {index} is not an image in [0, 1] or uint8"
        )
    return (tensor * 255).round().to(torch.uint8)


def load_target_dataset(name: str, factory: Mapping[str, Any], train: bool) -> ImageDataset:
    """The split ``train`` of the data set that ``factory[_target_]`` builds (see the module)."""
    target = str(factory[TARGET_KEY])
    try:
        function = get_method(target)
    except Exception as error:  # Hydra wraps import errors of every kind
        raise DataTargetError(f"data factory {target!r} cannot be imported: {error}") from error
    arguments = dict(factory)
    try:
        takes_train = "train" in inspect.signature(function).parameters
    except (TypeError, ValueError):
        takes_train = False
    if takes_train:
        arguments["train"] = train
    dataset = instantiate(arguments, _convert_="all")
    samples = [dataset[index] for index in range(len(dataset))]
    if not samples:
        raise DataTargetError(f"data factory {target!r} returned an empty data set")
    images = torch.stack([_to_uint8(image, i, target) for i, (image, _) in enumerate(samples)])
    if images.ndim != 4:
        raise DataTargetError(
            f"data factory {target!r}: images of shape {tuple(images.shape[1:])} are not (C, H, W)"
        )
    labels = torch.tensor([int(label) for _, label in samples], dtype=torch.int64)
    classes = getattr(dataset, "classes", None) or [str(c) for c in range(int(labels.max()) + 1)]
    channels, height, width = images.shape[1:]
    info = DatasetInfo(name, (channels, height, width), tuple(str(c) for c in classes))
    return ImageDataset(images, labels, info)
