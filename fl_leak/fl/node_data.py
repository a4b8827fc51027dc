"""A node's training data, from its node config: its own images, or its share of the run's data set.

Flower hands every ClientApp its node's config (``flower-supernode --node-config "..."``; the
Simulation Engine sets ``partition-id`` and ``num-partitions`` only). Keys read here:

``data-root``
    A folder of images in torchvision's ImageFolder layout (``<root>/<class>/<image>``). The
    node trains on all of it (its own data, no slicing) and never loads the run's data set. The
    images are converted to the model's input shape ``(C, H, W)``, which the server sends in its
    configs (``input-shape``, ``class-names``): resized so the shorter side is ``min(H, W)``,
    centre-cropped to ``H x W``, converted to grey when ``C`` is 1. Labels: a class folder named
    as a class of the run's data set gets that class's label when every folder is so named;
    otherwise folders are numbered in sorted order (ImageFolder's rule; give every node the same
    folders then). Absent: the node loads the run's data set (``data=...``) and takes its
    partition ``partition-id`` of ``num-partitions``, as in the simulation.
``send-ground-truth``
    Whether the node sends the batch the attack targets on the oracle channel, for scoring
    (:mod:`fl_leak.fl.oracle`): raw training images, sent to the server. Default: on for the
    run's data set (a public benchmark, which the server could load itself), off for a node's
    own images (``data-root``), which are sent only with ``send-ground-truth=true``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from fl_leak.config import RunConfig
from fl_leak.data import DatasetInfo, ImageDataset
from fl_leak.errors import FlLeakError
from fl_leak.fl.local_data import load_split, partitions

log = logging.getLogger(__name__)

DATA_ROOT_KEY = "data-root"
GROUND_TRUTH_KEY = "send-ground-truth"
INPUT_SHAPE_KEY = "input-shape"
CLASS_NAMES_KEY = "class-names"
IMAGE_FOLDER = "image_folder"


@dataclass(frozen=True)
class NodeData:
    """A node's training data: a data set, the indices of the node's samples in it, and whether
    they are the node's own images (``data-root``) rather than a share of the run's data set."""

    dataset: ImageDataset
    indices: np.ndarray
    own: bool = False


def data_config(info: DatasetInfo) -> dict[str, Any]:
    """What the server adds to its configs so that a node with ``data-root`` can build the model
    and shape its images: the input shape and the class names of the run's data set."""
    return {INPUT_SHAPE_KEY: list(info.input_shape), CLASS_NAMES_KEY: list(info.class_names)}


def node_data(
    settings: RunConfig,
    partition_id: int,
    node_config: Mapping[str, Any],
    config: Mapping[str, Any],
) -> NodeData:
    """This node's training data: ``data-root`` of ``node_config``, or its partition of the run's
    data set. ``config`` is the server's message config (see :func:`data_config`)."""
    root = str(node_config.get(DATA_ROOT_KEY, "") or "")
    if not root:
        return NodeData(load_split(settings.data, train=True), partitions(settings)[partition_id])
    if INPUT_SHAPE_KEY not in config or CLASS_NAMES_KEY not in config:
        raise FlLeakError(
            f"{DATA_ROOT_KEY}={root!r}: the server sent no {INPUT_SHAPE_KEY} and "
            f"{CLASS_NAMES_KEY} to shape this node's images"
        )
    shape = tuple(int(size) for size in config[INPUT_SHAPE_KEY])
    names = tuple(str(name) for name in config[CLASS_NAMES_KEY])
    dataset = image_folder(root, shape, names)
    return NodeData(dataset, np.arange(len(dataset)), own=True)


@lru_cache(maxsize=4)
def image_folder(
    root: str, input_shape: tuple[int, ...], class_names: tuple[str, ...]
) -> ImageDataset:
    """The images under ``root`` (ImageFolder layout) as uint8 tensors of ``input_shape``, with
    labels among ``class_names`` (see the module's notes)."""
    from torchvision import datasets, transforms

    channels, height, width = input_shape
    if channels not in (1, 3):
        raise FlLeakError(f"{DATA_ROOT_KEY}: images with {channels} channels are not supported")
    steps: list[Any] = [
        transforms.Resize(min(height, width)),
        transforms.CenterCrop((height, width)),
    ]
    if channels == 1:
        steps.append(transforms.Grayscale(1))
    steps.append(transforms.PILToTensor())
    folder = datasets.ImageFolder(root, transform=transforms.Compose(steps))
    labels = _labels(folder.classes, class_names, root)
    images = torch.stack([folder[index][0] for index in range(len(folder))])
    targets = torch.tensor([labels[target] for target in folder.targets], dtype=torch.int64)
    info = DatasetInfo(IMAGE_FOLDER, (channels, height, width), class_names)
    log.info("%s: %d images of %d classes", root, len(images), len(folder.classes))
    return ImageDataset(images, targets, info)


def _labels(folders: Sequence[str], class_names: Sequence[str], root: str) -> list[int]:
    """The label of each class folder (by its index in ``folders``)."""
    if all(name in class_names for name in folders):
        return [class_names.index(name) for name in folders]
    if len(folders) > len(class_names):
        raise FlLeakError(
            f"{DATA_ROOT_KEY}={root!r} holds {len(folders)} class folders; the model has "
            f"{len(class_names)} classes"
        )
    return list(range(len(folders)))


def sends_ground_truth(node_config: Mapping[str, Any], own: bool) -> bool:
    """Whether this node sends the attacked batch for scoring (``send-ground-truth``); ``own``:
    its data are its own images (``data-root``)."""
    value = node_config.get(GROUND_TRUTH_KEY)
    if value is None:
        return not own
    if isinstance(value, str):
        if value.lower() not in ("true", "false"):
            raise FlLeakError(f"{GROUND_TRUTH_KEY}={value!r} must be true or false")
        return value.lower() == "true"
    return bool(value)
