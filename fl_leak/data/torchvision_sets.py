"""CIFAR-10, CIFAR-100 and MNIST through torchvision's own readers.

torchvision's CIFAR readers check the md5 sum of every file against the official archive, so
files written in the same format by anyone else (a test, a preprocessed or subsampled copy) are
rejected as corrupted. With ``verify_checksums=False`` the CIFAR readers below check only that the
files exist; everything else (file names, pickle layout, parsing) is torchvision's. torchvision's
MNIST reader checks only that its raw files exist (``MNIST/raw/{train,t10k}-{images-idx3,
labels-idx1}-ubyte``), so the option changes nothing there.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import torch

from fl_leak.data.base import DatasetInfo, ImageDataset
from fl_leak.data.registry import register_dataset

if TYPE_CHECKING:  # torchvision is imported where a set is loaded: it takes a second to load
    from torchvision.datasets import CIFAR10

T = TypeVar("T")


@cache  # one subclass per reader, however often a set is loaded
def _without_md5(reader: type[CIFAR10]) -> type[CIFAR10]:
    """Subclass of a torchvision CIFAR reader that checks that its files exist, not their md5."""
    return type(
        f"Unverified{reader.__name__}",
        (reader,),
        {
            "train_list": [[name, None] for name, _ in reader.train_list],
            "test_list": [[name, None] for name, _ in reader.test_list],
            "meta": {**reader.meta, "md5": None},
        },
    )


def _read(name: str, reader: Callable[..., T], root: Path, train: bool, download: bool) -> T:
    try:
        return reader(root, train=train, download=download)
    except RuntimeError as err:
        reason = str(err).split(". You can use download=True")[0]
        raise RuntimeError(
            f"cannot load {name!r} from {root}: {reason}; set data.root to the folder that holds "
            "its files, or data.download=true to let torchvision download them"
        ) from err


def _cifar_loader(name: str, reader_name: str) -> Callable[..., ImageDataset]:
    def load(root: Path, *, train: bool, download: bool, verify_checksums: bool) -> ImageDataset:
        import torchvision.datasets

        reader = getattr(torchvision.datasets, reader_name)
        checked = reader if verify_checksums else _without_md5(reader)
        data = _read(name, checked, root, train, download)
        images = torch.from_numpy(data.data).permute(0, 3, 1, 2).contiguous()
        labels = torch.tensor(data.targets, dtype=torch.int64)
        return ImageDataset(images, labels, DatasetInfo(name, (3, 32, 32), tuple(data.classes)))

    load.__doc__ = f"Load {name} with torchvision's reader (md5 checked if ``verify_checksums``)."
    return load


load_cifar10 = register_dataset("cifar10")(_cifar_loader("cifar10", "CIFAR10"))
load_cifar100 = register_dataset("cifar100")(_cifar_loader("cifar100", "CIFAR100"))


@register_dataset("mnist")
def load_mnist(root: Path, *, train: bool, download: bool, verify_checksums: bool) -> ImageDataset:
    """Load MNIST with torchvision's reader; ``verify_checksums`` has no effect (see module doc)."""
    from torchvision.datasets import MNIST

    data = _read("mnist", MNIST, root, train, download)
    images = data.data.unsqueeze(1).contiguous()
    return ImageDataset(
        images, data.targets, DatasetInfo("mnist", (1, 28, 28), tuple(data.classes))
    )
