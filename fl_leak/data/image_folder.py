"""A folder of the user's own images, in torchvision's ImageFolder layout.

``root/<class name>/<image file>``: one sub-folder per class (sorted names give the labels), any
image format Pillow reads, any size and channel count, as long as every image has the same. Colour
images keep their 3 channels, grayscale ones (mode ``L``) 1; images with an alpha channel are
read as RGB. The evaluation split is fixed: with ``root/train`` and ``root/test`` folders those are
the splits; otherwise every ``TEST_EVERY``-th image of each class (in file-name order) is held out.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from fl_leak.data.base import DatasetInfo, ImageDataset
from fl_leak.data.registry import register_dataset
from fl_leak.errors import FlLeakError

if TYPE_CHECKING:  # torchvision is imported where a folder is read: it takes a second to load
    from torchvision.datasets import ImageFolder

TEST_EVERY = 5  # one image in five held out for evaluation where the folder has no test split


class ImageFolderError(FlLeakError):
    """A folder that does not hold a usable image data set; the message names the problem."""


def _mode(image: Image.Image) -> str:
    return "L" if image.mode in ("1", "L", "I;16", "I", "F") else "RGB"


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        converted = image.convert(_mode(image))
        array = np.asarray(converted, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _scan(root: Path) -> ImageFolder:
    from torchvision.datasets import ImageFolder

    if not root.is_dir():
        raise ImageFolderError(
            f"data.root={root} is not a folder: data=image_folder needs "
            "data.root=<a folder of class sub-folders of images>"
        )
    try:
        return ImageFolder(str(root), loader=lambda path: path)
    except (FileNotFoundError, RuntimeError) as error:
        raise ImageFolderError(
            f"data.root={root} holds no image in torchvision's ImageFolder layout "
            f"(<root>/<class>/<image>): {error}"
        ) from error


def _stack(folder: ImageFolder, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    arrays = [_read(Path(path)) for path, _ in folder.samples]
    shapes = Counter(array.shape for array in arrays)
    if len(shapes) > 1:
        (common, _), *_ = shapes.most_common()
        odd = next(
            path
            for (path, _), array in zip(folder.samples, arrays, strict=True)
            if array.shape != common
        )
        raise ImageFolderError(
            f"data.root={root}: images differ in size or channels ({len(shapes)} shapes, e.g. "
            f"{common} and {odd} of shape {_read(Path(odd)).shape}); resize them to one size"
        )
    images = torch.from_numpy(np.stack(arrays))
    labels = torch.tensor([label for _, label in folder.samples], dtype=torch.int64)
    return images, labels


@register_dataset("image_folder")
def load_image_folder(
    root: Path, *, train: bool, download: bool, verify_checksums: bool
) -> ImageDataset:
    """Load a split of the images under ``root`` (see the module); ``download`` and
    ``verify_checksums`` are accepted for a uniform loader signature and ignored."""
    split_root = root / ("train" if train else "test")
    has_splits = (root / "train").is_dir() and (root / "test").is_dir()
    folder = _scan(split_root if has_splits else root)
    images, labels = _stack(folder, root)
    if not has_splits:
        position = torch.zeros(len(labels), dtype=torch.int64)
        for label in labels.unique():
            members = torch.nonzero(labels == label).flatten()
            position[members] = torch.arange(len(members))
        held_out = position % TEST_EVERY == TEST_EVERY - 1
        keep = ~held_out if train else held_out
        images, labels = images[keep], labels[keep]
    if len(images) == 0:
        raise ImageFolderError(
            f"data.root={root}: the {'train' if train else 'test'} split is empty"
        )
    channels, height, width = images.shape[1:]
    info = DatasetInfo("image_folder", (channels, height, width), tuple(folder.classes))
    return ImageDataset(images, labels, info)
