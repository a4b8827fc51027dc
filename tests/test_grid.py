"""The image grid is a readable PNG of the documented size, whose labels never overlap; so is the
collage of many jobs' grids."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.backend_bases import RendererBase
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.transforms import Bbox
from PIL import Image

from fl_leak.report import save_image_grid
from fl_leak.report.collage import collage_figure
from fl_leak.report.grid import CELL_HEIGHT, CELL_WIDTH, DPI, grid_figure

CLASSES = (  # the embedded data's classes, as grids of a run title their images
    "astronaut",
    "chelsea",
    "coffee",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "rocket",
    "brick",
    "camera",
    "coins",
    "grass",
    "gravel",
)


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


def _drawn(figure: Figure) -> tuple[RendererBase, list[tuple[str, Bbox]], list[Bbox]]:
    """Draw ``figure``; its non-empty labels with their boxes, and its images' boxes (pixels)."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]
    texts = [artist for artist in figure.findobj(Text) if isinstance(artist, Text)]
    labels = [
        (text.get_text(), text.get_window_extent(renderer))
        for text in texts
        if text.get_visible() and text.get_text().strip()
    ]
    images = [ax.get_window_extent(renderer) for ax in figure.axes]
    return renderer, labels, images


GAP = 1.5  # pixels each box is grown by: labels closer than 3 pixels read as one


def _overlap(a: Bbox, b: Bbox) -> bool:
    a, b = a.padded(GAP), b.padded(GAP)
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _assert_readable(figure: Figure, labels_expected: int) -> None:
    """No two labels overlap or touch, no label covers an image, every label lies inside the
    figure."""
    _, labels, images = _drawn(figure)
    assert len(labels) == labels_expected
    box = figure.bbox
    for text, extent in labels:
        assert box.x0 <= extent.x0 and extent.x1 <= box.x1, text
        assert box.y0 <= extent.y0 and extent.y1 <= box.y1, text
        for image in images:
            assert not _overlap(extent, image), text
    for (first, a), (second, b) in combinations(labels, 2):
        assert not _overlap(a, b), (first, second)


@pytest.mark.parametrize("count", [1, 8, 40, 64])
def test_labels_never_overlap_at_any_number_of_images(count: int) -> None:
    originals = _images(count, 3, 8, 8)
    titles = [f"c{10 + index // 12 % 2} {CLASSES[index % 12]}" for index in range(count)]

    figure = grid_figure(originals, originals + 0.01, titles=titles, match=False)

    blocks = -(-count // 8)
    _assert_readable(figure, 2 * count + 2 * blocks)  # title and PSNR each; two row labels
    assert tuple(figure.get_size_inches() * DPI) == pytest.approx(
        _expected_size(min(count, 8), blocks)
    )


def test_a_title_too_long_for_its_column_is_broken_then_cut() -> None:
    originals = _images(3, 1, 8, 8)
    titles = ["c0 " + "x" * 200, "c11_sum_of_clients_" * 3, "c2 cat"]

    figure = grid_figure(originals, originals, titles=titles, match=False)

    texts = [text.get_text() for text in figure.texts]
    assert texts[0].startswith("c0") and texts[0].endswith("\u2026") and "\n" in texts[0]
    assert "c2 cat" in texts
    _assert_readable(figure, 3 * 2 + 2)


def test_collage_titles_never_overlap_each_other_or_the_grids() -> None:
    shapes = [(300, 125), (300, 1000), (1500, 1000), (2400, 1000), (300, 250)] * 3
    tiles = [
        (
            f"{number}: model=cnn2_c{number} fl.batch_size={2**number} attack=hybrid "
            "attack.options.tolerance=1e-10 defense=clip_noise defense.options.where=server "
            "defense.options.noise_multiplier=0.001 experiment=defenses " * (1 + number % 3),
            np.full((*shape, 3), 0.5),
        )
        for number, shape in enumerate(shapes)
    ]

    figure = collage_figure(tiles)

    _assert_readable(figure, len(tiles))
