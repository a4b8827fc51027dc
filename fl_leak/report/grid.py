"""PNG grid of original images above their matched reconstructions, with per-image PSNR.

The layout is computed, not left to matplotlib: each block of columns is a band of titles, a row
of originals, a row of reconstructions and a line of PSNR values, and every label is sized (and
broken into lines, or cut with an ellipsis) to fit its own box, so no two labels overlap at any
number of images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fl_leak.metrics.image import Images, match_reconstructions, psnr
from fl_leak.report.text import Measure

CELL_WIDTH = 1.25  # inches per image column
CELL_HEIGHT = 1.5  # inches per image row, room for a title or a PSNR line included
DPI = 100
LEFT = 0.25  # inches left of the first column, for the row labels
RIGHT = 0.05  # inches right of the last column
GAP = 0.08  # inches between two images side by side, and between labels of neighbouring columns
TITLE_BAND = 0.32  # inches above a row of originals: two lines of titles at 7 points
ROW_GAP = 0.06  # inches between an original and its reconstruction
PSNR_BAND = 0.2  # inches under a row of reconstructions: one line of PSNR values
TEXT_PAD = 0.05  # inches between an image and its label
TITLE_POINTS = (7.0, 4.5)  # largest and smallest title size
LABEL_POINTS = (8.0, 5.0)  # largest and smallest size of row labels and PSNR values
ROW_LABELS = ("original", "reconstruction")


def _show(ax: Axes, image: torch.Tensor) -> None:
    pixels = image.clamp(0, 1).permute(1, 2, 0).numpy()
    if pixels.shape[2] == 1:
        ax.imshow(pixels[..., 0], cmap="gray", vmin=0, vmax=1, aspect="auto")
    else:
        ax.imshow(pixels, aspect="auto")
    ax.set_xticks([])
    ax.set_yticks([])


def grid_figure(
    originals: Images,
    reconstructions: Images,
    titles: Sequence[str] | None = None,
    match: bool = True,
    max_columns: int = 8,
) -> Figure:
    """The figure :func:`save_image_grid` writes (parameters as there), for drawing elsewhere."""
    if titles is not None and len(titles) != len(originals):
        raise ValueError(f"got {len(titles)} titles for {len(originals)} images")
    originals = torch.as_tensor(originals).detach().to("cpu", torch.float64)
    reconstructions = torch.as_tensor(reconstructions).detach().to("cpu", torch.float64)
    if match:
        order = match_reconstructions(originals, reconstructions)
        reconstructions = reconstructions[torch.from_numpy(order)]
    values = psnr(originals, reconstructions)
    count = len(originals)
    columns = max(1, min(count, max_columns))
    blocks = max(1, math.ceil(count / columns))

    width, height = columns * CELL_WIDTH, 2 * blocks * CELL_HEIGHT
    figure = Figure(figsize=(width, height), dpi=DPI)
    measure = Measure(figure)
    pitch = (width - LEFT - RIGHT) / columns
    block_height = 2 * CELL_HEIGHT
    side = min(pitch - GAP, (block_height - TITLE_BAND - ROW_GAP - PSNR_BAND - GAP) / 2)
    label_width = pitch - GAP
    content = TITLE_BAND + 2 * side + ROW_GAP + PSNR_BAND
    first_top = height - (block_height - content) / 2 - TITLE_BAND  # blocks centred vertically

    def box(x: float, top: float) -> tuple[float, float, float, float]:  # inches to fractions
        return (x / width, (top - side) / height, side / width, side / height)

    row_labels = [
        measure.fit(label, side - GAP, LEFT - 2 * TEXT_PAD, *LABEL_POINTS) for label in ROW_LABELS
    ]
    for index in range(count):
        block, column = divmod(index, columns)
        centre = LEFT + (column + 0.5) * pitch
        top = first_top - block * block_height
        below = top - side - ROW_GAP
        _show(figure.add_axes(box(centre - side / 2, top)), originals[index])
        _show(figure.add_axes(box(centre - side / 2, below)), reconstructions[index])
        if titles is not None:
            title = measure.fit(titles[index], label_width, TITLE_BAND - TEXT_PAD, *TITLE_POINTS)
            _label(figure, title.text, title.size, centre, top + TEXT_PAD, va="bottom")
        value = measure.fit(
            f"{values[index].item():.1f} dB", label_width, PSNR_BAND - TEXT_PAD, *LABEL_POINTS
        )
        _label(figure, value.text, value.size, centre, below - side - TEXT_PAD, va="top")
    for block in range(blocks):
        top = first_top - block * block_height
        for row, fitted in enumerate(row_labels):
            middle = top - side / 2 - row * (side + ROW_GAP)
            _label(
                figure, fitted.text, fitted.size, LEFT - TEXT_PAD, middle, ha="right", rotation=90
            )
    return figure


def _label(
    figure: Figure,
    text: str,
    size: float,
    x: float,
    y: float,
    ha: str = "center",
    va: str = "center",
    rotation: float = 0,
) -> None:
    """A label at (``x``, ``y``) inches from the figure's lower left corner."""
    width, height = figure.get_size_inches()
    figure.text(
        x / width,
        y / height,
        text,
        fontsize=size,
        ha=ha,
        va=va,
        rotation=rotation,
        multialignment="center",
        parse_math=False,
    )


def save_image_grid(
    originals: Images,
    reconstructions: Images,
    path: str | Path,
    titles: Sequence[str] | None = None,
    match: bool = True,
    max_columns: int = 8,
) -> Path:
    """Write a PNG with originals in one row and their reconstructions below, PSNR under each.

    Parameters
    ----------
    originals, reconstructions : (B, C, H, W) tensors or arrays in [0, 1]
        One or three channels. Shown clipped to [0, 1]; PSNR uses the unclipped values.
    path : str or Path
        PNG file to write; missing parent directories are created.
    titles : sequence of str, optional
        One title per original (e.g. its label), written above it: as large as fits its column
        (7 points down to 4.5), on two lines where needed, cut with an ellipsis beyond that.
    match : bool
        Reorder the reconstructions by Hungarian matching (``match_reconstructions``) first.
    max_columns : int
        Images per row; larger batches wrap into further original/reconstruction row pairs.

    Returns
    -------
    Path
        The written file. Its size is ``columns * CELL_WIDTH * DPI`` by
        ``2 * blocks * CELL_HEIGHT * DPI`` pixels.
    """
    figure = grid_figure(originals, reconstructions, titles, match, max_columns)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
