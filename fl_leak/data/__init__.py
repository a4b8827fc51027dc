"""Data sets (an embedded offline one, torchvision-backed ones, a folder of the user's images)
and client partitioning."""

from fl_leak.data import embedded, image_folder, torchvision_sets  # noqa: F401  (registration of the sets)
from fl_leak.data.base import DatasetInfo, ImageDataset
from fl_leak.data.partition import partition_indices
from fl_leak.data.registry import (
    DEFAULT_ROOT,
    DatasetLoader,
    UnknownDatasetError,
    list_datasets,
    load_dataset,
    register_dataset,
)

__all__ = [
    "DEFAULT_ROOT",
    "DatasetInfo",
    "DatasetLoader",
    "ImageDataset",
    "UnknownDatasetError",
    "list_datasets",
    "load_dataset",
    "partition_indices",
    "register_dataset",
]
