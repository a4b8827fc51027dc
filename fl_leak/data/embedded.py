"""The embedded offline data set shipped inside the package (see ``embedded/README.md``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fl_leak.data.base import DatasetInfo, ImageDataset
from fl_leak.data.registry import register_dataset

EMBEDDED_PATH = Path(__file__).parent / "embedded" / "embedded.npz"


@register_dataset("embedded")
def load_embedded(
    root: Path, *, train: bool, download: bool, verify_checksums: bool
) -> ImageDataset:
    """Load a split of the embedded data set: 12 classes of 32x32 RGB crops of photographs.

    ``root``, ``download`` and ``verify_checksums`` are accepted for a uniform loader signature
    and ignored: the data ship with the package.
    """
    split = "train" if train else "test"
    with np.load(EMBEDDED_PATH, allow_pickle=False) as arrays:
        images = torch.from_numpy(arrays[f"x_{split}"])
        labels = torch.from_numpy(arrays[f"y_{split}"])
        class_names = tuple(str(name) for name in arrays["class_names"])
    _, channels, height, width = images.shape
    info = DatasetInfo("embedded", (channels, height, width), class_names)
    return ImageDataset(images, labels, info)
