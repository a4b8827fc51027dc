"""The image grid is a readable PNG of the documented size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fl_leak.report import save_image_grid
from fl_leak.report.grid import CELL_HEIGHT, CELL_WIDTH, DPI


def _images(*shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(0))


def _expected_size(columns: int, blocks: int) -> tuple[int, int]:
    return round(columns * CELL_WIDTH * DPI), round(2 * blocks * CELL_HEIGHT * DPI)


def test_writes_a_png_of_the_expected_size(tmp_path: Path) -> None:
    originals = _images(5, 3, 32, 32)
    reconstructions = originals.flip(0) + 0.05
    path = save_image_grid(
        originals, reconstructions, tmp_path / "sub" / "grid.png", titles=list("abcde")
    )
    assert path == tmp_path / "sub" / "grid.png"
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == _expected_size(5, 1)
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 10  # not a blank canvas


def test_wraps_large_batches_and_draws_grey_images(tmp_path: Path) -> None:
    originals = _images(11, 1, 28, 28).numpy()
    path = save_image_grid(originals, originals, tmp_path / "grid.png", max_columns=4)
    with Image.open(path) as image:
        assert image.size == _expected_size(4, 3)


def test_rejects_titles_of_the_wrong_length(tmp_path: Path) -> None:
    originals = _images(2, 3, 16, 16)
    with pytest.raises(ValueError, match="got 1 titles for 2 images"):
        save_image_grid(originals, originals, tmp_path / "grid.png", titles=["a"])
