"""Name -> data set loader registry, and the one entry point ``load_dataset``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from fl_leak.data.base import ImageDataset
from fl_leak.errors import UnknownDatasetError
from fl_leak.registry import Registry

DEFAULT_ROOT = Path.home() / ".cache" / "fl_leak" / "data"


class DatasetLoader(Protocol):
    """``loader(root, train=..., download=..., verify_checksums=...) -> ImageDataset``."""

    def __call__(
        self, root: Path, *, train: bool, download: bool, verify_checksums: bool
    ) -> ImageDataset: ...


DATASETS: Registry[str, DatasetLoader] = Registry(
    "data set", plural="data sets", error=UnknownDatasetError
)


def register_dataset(name: str) -> Callable[[DatasetLoader], DatasetLoader]:
    """Register a loader (see ``DatasetLoader``) under ``name``."""
    return DATASETS.register(name)


def list_datasets() -> list[str]:
    """Every registered data set name, sorted."""
    return DATASETS.names()


def load_dataset(
    name: str = "embedded",
    root: str | Path | None = None,
    train: bool = True,
    download: bool = False,
    verify_checksums: bool = True,
) -> ImageDataset:
    """Load one split of a data set as float images in [0, 1], ``(C, H, W)``, with int labels.

    Parameters
    ----------
    name : str
        A registered name: ``embedded`` (shipped with the package, the default), ``cifar10``,
        ``cifar100``, ``mnist``, or one added with ``register_dataset``.
    root : str or Path, optional
        Directory holding the files in torchvision's layout; ``DEFAULT_ROOT`` when None.
        Ignored by ``embedded``.
    train : bool
        The training split if True, else the held-out test split.
    download : bool
        Let torchvision download missing files.
    verify_checksums : bool
        Check the md5 sum of CIFAR files against the official ones. Set False to read files in
        the CIFAR format that are not the official ones; see ``fl_leak.data.torchvision_sets``.

    Returns
    -------
    ImageDataset
        The split, with its description in ``.info``.
    """
    loader = DATASETS.get(name)
    root = DEFAULT_ROOT if root is None else Path(root)
    return loader(root, train=train, download=download, verify_checksums=verify_checksums)
