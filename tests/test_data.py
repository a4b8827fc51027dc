"""Data sets read from real files in their on-disk formats, and client partitioning."""

from __future__ import annotations

import pickle
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from fl_leak.data import (
    DatasetInfo,
    ImageDataset,
    UnknownDatasetError,
    list_datasets,
    load_dataset,
    partition_indices,
    register_dataset,
    registry,
)
from fl_leak.data.embedded import EMBEDDED_PATH

RNG = np.random.default_rng(0)


def _pickle(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj))


def _cifar_batch(n: int, num_classes: int, label_key: str) -> tuple[dict, np.ndarray]:
    data = RNG.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = RNG.integers(0, num_classes, size=n).tolist()
    return {"data": data, label_key: labels}, data


def _write_idx(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


# Embedded data set -------------------------------------------------------------------------------


def test_embedded_is_default_and_small() -> None:
    assert EMBEDDED_PATH.stat().st_size <= 5 * 2**20
    train = load_dataset()
    test = load_dataset("embedded", train=False)
    assert train.info == test.info
    assert train.info.name == "embedded"
    assert train.info.input_shape == (3, 32, 32)
    assert train.info.num_classes == len(train.info.class_names) >= 10
    assert (len(train), len(test)) == (32 * train.info.num_classes, 8 * train.info.num_classes)
    assert torch.equal(torch.bincount(train.labels), torch.full((train.info.num_classes,), 32))


def test_embedded_items_are_float_images_in_unit_range() -> None:
    data = load_dataset("embedded")
    image, label = data[0]
    assert image.dtype == torch.float32 and image.shape == (3, 32, 32)
    assert isinstance(label, int)
    batch = torch.stack([data[i][0] for i in range(0, len(data), 7)])
    assert batch.min() >= 0.0 and batch.max() <= 1.0
    assert batch.std() > 0.1  # natural images, not blanks


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(UnknownDatasetError, match=r"known data sets: .*cifar10.*embedded"):
        load_dataset("imagenet")
    assert {"embedded", "cifar10", "cifar100", "mnist"} <= set(list_datasets())


def test_register_dataset_adds_a_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry.DATASETS, "_entries", dict(registry.DATASETS._entries))
    info = DatasetInfo("ones", (1, 2, 2), ("a", "b"))

    @register_dataset("ones-for-test")
    def load_ones(root: Path, *, train: bool, download: bool, verify_checksums: bool):
        return ImageDataset(torch.full((3, 1, 2, 2), 255, dtype=torch.uint8), torch.zeros(3), info)

    assert torch.equal(load_dataset("ones-for-test")[2][0], torch.ones(1, 2, 2))
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("ones-for-test")(load_ones)


def test_image_dataset_rejects_inconsistent_arrays() -> None:
    info = DatasetInfo("x", (3, 4, 4), ("a",))
    with pytest.raises(ValueError, match="uint8"):
        ImageDataset(torch.zeros(2, 3, 4, 4), torch.zeros(2), info)
    with pytest.raises(ValueError, match="labels"):
        ImageDataset(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(3), info)
    with pytest.raises(ValueError, match="input_shape"):
        ImageDataset(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(2), info)


# torchvision-backed data sets, from files written in their real formats --------------------------


def test_cifar10_reads_python_batches(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    names = [f"class{i}" for i in range(10)]
    train_parts = []
    for i in range(1, 6):
        batch, data = _cifar_batch(4, 10, "labels")
        _pickle(folder / f"data_batch_{i}", batch)
        train_parts.append((data, batch["labels"]))
    test_batch, test_data = _cifar_batch(3, 10, "labels")
    _pickle(folder / "test_batch", test_batch)
    _pickle(folder / "batches.meta", {"label_names": names})

    train = load_dataset("cifar10", root=tmp_path, verify_checksums=False)
    test = load_dataset("cifar10", root=str(tmp_path), train=False, verify_checksums=False)

    assert train.info == DatasetInfo("cifar10", (3, 32, 32), tuple(names))
    assert (len(train), len(test)) == (20, 3)
    expected = np.concatenate([data for data, _ in train_parts]).reshape(-1, 3, 32, 32)
    assert torch.equal(train.images, torch.from_numpy(expected))
    assert train.labels.tolist() == [label for _, labels in train_parts for label in labels]
    image, label = test[2]
    assert torch.allclose(image, torch.from_numpy(test_data[2].reshape(3, 32, 32)) / 255.0)
    assert label == test_batch["labels"][2]


def test_cifar10_checksums_are_verified_by_default(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        _pickle(folder / name, _cifar_batch(2, 10, "labels")[0])
    _pickle(folder / "batches.meta", {"label_names": [str(i) for i in range(10)]})
    with pytest.raises(RuntimeError, match=r"cannot load 'cifar10' from .*corrupted"):
        load_dataset("cifar10", root=tmp_path)


def test_missing_files_raise_with_the_root(tmp_path: Path) -> None:
    for name in ("cifar10", "cifar100", "mnist"):
        with pytest.raises(RuntimeError, match=re.escape(f"cannot load '{name}' from {tmp_path}")):
            load_dataset(name, root=tmp_path, verify_checksums=False)


def test_cifar100_reads_fine_labels(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    train_batch, train_data = _cifar_batch(6, 100, "fine_labels")
    test_batch, _ = _cifar_batch(2, 100, "fine_labels")
    for batch in (train_batch, test_batch):
        batch["coarse_labels"] = [label // 5 for label in batch["fine_labels"]]
    _pickle(folder / "train", train_batch)
    _pickle(folder / "test", test_batch)
    names = [f"fine{i}" for i in range(100)]
    _pickle(folder / "meta", {"fine_label_names": names, "coarse_label_names": names[:20]})

    train = load_dataset("cifar100", root=tmp_path, verify_checksums=False)
    test = load_dataset("cifar100", root=tmp_path, train=False, verify_checksums=False)

    assert train.info.num_classes == 100 and train.info.input_shape == (3, 32, 32)
    assert train.labels.tolist() == train_batch["fine_labels"]
    assert torch.equal(train.images, torch.from_numpy(train_data.reshape(-1, 3, 32, 32)))
    assert len(test) == 2


def test_mnist_reads_raw_idx_files(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    train_images = RNG.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    train_labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    _write_idx(raw / "train-images-idx3-ubyte", train_images)
    _write_idx(raw / "train-labels-idx1-ubyte", train_labels)
    _write_idx(raw / "t10k-images-idx3-ubyte", train_images[:2])
    _write_idx(raw / "t10k-labels-idx1-ubyte", train_labels[:2])

    train = load_dataset("mnist", root=tmp_path)
    test = load_dataset("mnist", root=tmp_path, train=False)

    assert train.info.input_shape == (1, 28, 28) and train.info.num_classes == 10
    assert train.labels.tolist() == [3, 1, 4, 1, 5]
    image, label = train[4]
    assert image.shape == (1, 28, 28) and label == 5
    assert torch.allclose(image[0], torch.from_numpy(train_images[4]) / 255.0)
    assert len(test) == 2


# Partitioning ------------------------------------------------------------------------------------

LABELS = np.repeat(np.arange(10), 100)


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
def test_partitions_cover_all_indices_without_overlap(scheme: str) -> None:
    parts = partition_indices(LABELS, 7, scheme=scheme, alpha=0.3, seed=1)
    assert len(parts) == 7 and all(len(part) > 0 for part in parts)
    assert all(part.dtype == np.int64 for part in parts)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(LABELS)))


def test_iid_partitions_are_balanced() -> None:
    sizes = [len(part) for part in partition_indices(LABELS, 7)]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
def test_partitions_are_deterministic_given_the_seed(scheme: str) -> None:
    first = partition_indices(LABELS, 5, scheme=scheme, seed=3)
    again = partition_indices(LABELS, 5, scheme=scheme, seed=3)
    other = partition_indices(LABELS, 5, scheme=scheme, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def _label_skew(parts: list[np.ndarray]) -> float:
    """Mean total-variation distance between each partition's label histogram and the global one."""
    overall = np.bincount(LABELS, minlength=10) / len(LABELS)
    return float(
        np.mean(
            [
                0.5 * np.abs(np.bincount(LABELS[p], minlength=10) / len(p) - overall).sum()
                for p in parts
            ]
        )
    )


def test_dirichlet_skew_grows_as_alpha_shrinks() -> None:
    skews = [
        np.mean([_label_skew(partition_indices(LABELS, 10, "dirichlet", a, s)) for s in range(5)])
        for a in (100.0, 1.0, 0.05)
    ]
    assert skews[0] < 0.1 < 0.25 < skews[1] < skews[2]
    assert _label_skew(partition_indices(LABELS, 10, "iid")) < 0.2  # sampling noise only


def test_dirichlet_keeps_every_partition_non_empty_with_tiny_alpha() -> None:
    parts = partition_indices(LABELS[:30], 30, "dirichlet", alpha=0.01)
    assert sorted(len(part) for part in parts) == [1] * 30


def test_partition_errors() -> None:
    with pytest.raises(ValueError, match="cannot split 3 samples into 4"):
        partition_indices([0, 1, 2], 4)
    with pytest.raises(ValueError, match="non-empty"):
        partition_indices([0, 1, 2], 0)
    with pytest.raises(ValueError, match="known schemes: iid, dirichlet"):
        partition_indices(LABELS, 2, scheme="shards")
    with pytest.raises(ValueError, match="alpha must be positive"):
        partition_indices(LABELS, 2, scheme="dirichlet", alpha=0.0)
    with pytest.raises(ValueError, match="one-dimensional"):
        partition_indices(np.zeros((2, 2)), 2)
