"""A folder of the user's own images (torchvision's ImageFolder layout), loaded and attacked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fl_leak.data import load_dataset
from fl_leak.data.image_folder import TEST_EVERY, ImageFolderError


def write_folder(root: Path, classes: int, per_class: int, shape: tuple[int, ...], seed: int = 0):
    """``per_class`` random images of ``shape`` ((H, W) grayscale or (H, W, 3)) per class."""
    generator = np.random.default_rng(seed)
    for label in range(classes):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            pixels = generator.integers(0, 256, size=shape, dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{index:03d}.png")


def test_colour_images_load_as_uint8_with_a_fixed_held_out_split(tmp_path: Path) -> None:
    write_folder(tmp_path, classes=3, per_class=10, shape=(16, 20, 3))

    train = load_dataset("image_folder", root=tmp_path, train=True)
    test = load_dataset("image_folder", root=tmp_path, train=False)

    assert train.info.input_shape == (3, 16, 20)
    assert train.info.class_names == ("class_0", "class_1", "class_2")
    assert len(test) == 3 * (10 // TEST_EVERY) and len(train) + len(test) == 30
    saved = np.array(Image.open(tmp_path / "class_1" / "000.png"))
    assert torch.equal(train.images[train.labels == 1][0], torch.from_numpy(saved).permute(2, 0, 1))


def test_grayscale_images_keep_one_channel_and_train_test_folders_are_the_splits(
    tmp_path: Path,
) -> None:
    write_folder(tmp_path / "train", classes=2, per_class=4, shape=(28, 28))
    write_folder(tmp_path / "test", classes=2, per_class=1, shape=(28, 28), seed=1)

    train = load_dataset("image_folder", root=tmp_path, train=True)
    test = load_dataset("image_folder", root=tmp_path, train=False)

    assert train.info.input_shape == (1, 28, 28)
    assert (len(train), len(test)) == (8, 2)


@pytest.mark.parametrize(
    "layout,named",
    [
        ("missing", "is not a folder"),
        ("empty", "holds no image"),
        ("mixed", "images differ in size or channels"),
    ],
)
def test_bad_folders_are_refused_naming_the_problem(
    layout: str, named: str, tmp_path: Path
) -> None:
    root = tmp_path / "images"
    if layout == "empty":
        (root / "class_0").mkdir(parents=True)
    if layout == "mixed":
        write_folder(root, classes=2, per_class=3, shape=(8, 8, 3))
        write_folder(root / "class_1", classes=1, per_class=1, shape=(9, 8, 3))
    with pytest.raises(ImageFolderError, match=named):
        load_dataset("image_folder", root=root, train=True)


@pytest.mark.parametrize(
    "shape",
    [pytest.param((16, 16, 3), marks=pytest.mark.slow), (28, 28)],  # colour: the loader's tests
    ids=["rgb16", "gray28"],
)
def test_a_folder_of_images_is_attacked_end_to_end(shape: tuple[int, ...], tmp_path: Path) -> None:
    images = tmp_path / "images"
    write_folder(images, classes=3, per_class=5, shape=shape)
    run_dir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "fl_leak.cli.main",
        "data=image_folder",
        f"data.root={images}",
        "fl.num_clients=2",
        "fl.rounds=1",
        "audit.max_dense=0",
        f"hydra.run.dir={run_dir}",
    ]

    result = subprocess.run(command, capture_output=True, text=True, timeout=600)

    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    records = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert [(record["client"], record["status"]) for record in records] == [(0, "ok"), (1, "ok")]
    assert all(record["psnr"] >= 60 and record["data"] == "image_folder" for record in records)
    assert (run_dir / "grid_round_1.png").exists()
