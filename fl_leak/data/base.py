"""The in-memory image data set every loader returns, and the description of a data set."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and an attack need to know about a data set.

    Attributes
    ----------
    name : str
        Registry name, e.g. ``"embedded"`` or ``"cifar10"``.
    input_shape : tuple of int
        Shape ``(C, H, W)`` of one image.
    class_names : tuple of str
        Name of each label, indexed by label.
    """

    name: str
    input_shape: tuple[int, int, int]
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)


class ImageDataset(Dataset[tuple[Tensor, int]]):
    """Labelled images held in memory as uint8, served as float tensors in [0, 1].

    Parameters
    ----------
    images : Tensor
        uint8 tensor ``(N, C, H, W)``.
    labels : Tensor
        Integer tensor ``(N,)``; stored as int64.
    info : DatasetInfo
        Description of the data set; ``info.input_shape`` must be ``images.shape[1:]``.
    """

    def __init__(self, images: Tensor, labels: Tensor, info: DatasetInfo) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(
                "images must be a uint8 tensor (N, C, H, W), "
                f"got {images.dtype} of shape {tuple(images.shape)}"
            )
        if labels.ndim != 1 or len(labels) != len(images):
            raise ValueError(f"labels must have shape ({len(images)},), got {tuple(labels.shape)}")
        if tuple(images.shape[1:]) != info.input_shape:
            raise ValueError(
                f"images of shape {tuple(images.shape[1:])} do not match "
                f"info.input_shape {info.input_shape}"
            )
        self.images = images
        self.labels = labels.to(torch.int64)
        self.info = info

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.images[index].to(torch.float32) / 255.0, int(self.labels[index])
