"""PNG grid of original images above their matched reconstructions, with per-image PSNR."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fl_leak.metrics.image import Images, match_reconstructions, psnr

CELL_WIDTH = 1.25  # inches per image column
CELL_HEIGHT = 1.5  # inches per image row, room for a title or a PSNR line included
DPI = 100
MARGIN = 0.25  # inches left for the row labels, the top titles and the bottom PSNR line


def _show(ax: Axes, image: torch.Tensor) -> None:
    pixels = image.clamp(0, 1).permute(1, 2, 0).numpy()
    if pixels.shape[2] == 1:
        ax.imshow(pixels[..., 0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(pixels)
    ax.set_xticks([])
    ax.set_yticks([])


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
        One title per original (e.g. its label), written above it.
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
    if titles is not None and len(titles) != len(originals):
        raise ValueError(f"got {len(titles)} titles for {len(originals)} images")
    originals = torch.as_tensor(originals).detach().to("cpu", torch.float64)
    reconstructions = torch.as_tensor(reconstructions).detach().to("cpu", torch.float64)
    if match:
        order = match_reconstructions(originals, reconstructions)
        reconstructions = reconstructions[torch.from_numpy(order)]
    values = psnr(originals, reconstructions)
    count = len(originals)
    columns = min(count, max_columns)
    blocks = math.ceil(count / columns)

    width, height = columns * CELL_WIDTH, 2 * blocks * CELL_HEIGHT
    figure = Figure(figsize=(width, height), dpi=DPI)
    axes = np.asarray(figure.subplots(2 * blocks, columns, squeeze=False))
    for index in range(count, blocks * columns):
        block, column = divmod(index, columns)
        axes[2 * block, column].set_axis_off()
        axes[2 * block + 1, column].set_axis_off()
    for index in range(count):
        block, column = divmod(index, columns)
        top, bottom = axes[2 * block, column], axes[2 * block + 1, column]
        _show(top, originals[index])
        _show(bottom, reconstructions[index])
        if titles is not None:
            top.set_title(titles[index], fontsize=7)
        bottom.set_xlabel(f"{values[index].item():.1f} dB", fontsize=8)
    for block in range(blocks):
        axes[2 * block, 0].set_ylabel("original", fontsize=8)
        axes[2 * block + 1, 0].set_ylabel("reconstruction", fontsize=8)
    figure.subplots_adjust(
        left=MARGIN / width,
        right=1 - 0.05 / width,
        top=1 - MARGIN / height,
        bottom=MARGIN / height,
        wspace=0.1,
        hspace=0.45,
    )

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
