"""One image of many jobs' grids: each job's last round of originals above reconstructions.

Tiles sit in rows of ``COLUMNS``; each is a job's title (as large as fits the tile's width, broken
into lines, cut with an ellipsis past ``TITLE_LINES``) above its grid, scaled down to fit the
tile but never up. A row is as tall as its tallest tile, so titles and grids never overlap.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.image import imread

from fl_leak.records import GRID_FILE
from fl_leak.report.grid import DPI as GRID_DPI
from fl_leak.report.jobs import Job
from fl_leak.report.text import Measure

TILE_WIDTH = 5.0  # inches per job
MAX_IMAGE_HEIGHT = 5.0  # inches: a taller grid is scaled down to this
PAD = 0.1  # inches around each tile's title and grid
TITLE_POINTS = (9.0, 6.0)  # largest and smallest title size
TITLE_LINES = 3
COLUMNS = 3
MAX_TILES = 36
DPI = 100


def last_grid(job: Job) -> Path | None:
    """The job's image grid of its last round, if it wrote any."""
    pattern = GRID_FILE.format(round="*")
    grids = sorted(
        (path for path in job.directory.glob(pattern) if path.stem.rsplit("_", 1)[1].isdigit()),
        key=lambda path: int(path.stem.rsplit("_", 1)[1]),
    )
    return grids[-1] if grids else None


def collage_figure(tiles: Sequence[tuple[str, np.ndarray]]) -> Figure:
    """The collage of ``tiles`` (title, image pixels), in rows of ``COLUMNS``."""
    columns = min(COLUMNS, len(tiles))
    rows = [tiles[start : start + columns] for start in range(0, len(tiles), columns)]
    figure = Figure(figsize=(TILE_WIDTH * columns, 1.0), dpi=DPI)
    measure = Measure(figure)
    title_height = Measure.height(TITLE_LINES, TITLE_POINTS[0])
    layout = []  # per row: fitted titles, image sizes, row height
    for row in rows:
        titles = [
            measure.fit(title, TILE_WIDTH - 2 * PAD, title_height, *TITLE_POINTS)
            for title, _ in row
        ]
        sizes = [_image_size(pixels) for _, pixels in row]
        band = max(Measure.height(fitted.lines, fitted.size) for fitted in titles) + PAD
        layout.append((titles, sizes, band, band + max(h for _, h in sizes) + 2 * PAD))
    width, height = TILE_WIDTH * columns, sum(row_height for *_, row_height in layout)
    figure.set_size_inches(width, height)
    top = height
    for row, (titles, sizes, band, row_height) in zip(rows, layout, strict=True):
        for column, ((_, pixels), fitted, (w, h)) in enumerate(
            zip(row, titles, sizes, strict=True)
        ):
            centre = (column + 0.5) * TILE_WIDTH
            figure.text(
                centre / width,
                (top - PAD) / height,
                fitted.text,
                fontsize=fitted.size,
                ha="center",
                va="top",
                multialignment="center",
                parse_math=False,
            )
            bottom = top - PAD - band - h
            ax = figure.add_axes(((centre - w / 2) / width, bottom / height, w / width, h / height))
            ax.imshow(pixels, aspect="auto")
            ax.axis("off")
        top -= row_height
    return figure


def _image_size(pixels: np.ndarray) -> tuple[float, float]:
    """Width and height in inches: the grid's own size, shrunk to fit the tile."""
    rows, columns = pixels.shape[:2]
    width, height = columns / GRID_DPI, rows / GRID_DPI
    scale = min(1.0, (TILE_WIDTH - 2 * PAD) / width, MAX_IMAGE_HEIGHT / height)
    return width * scale, height * scale


def save_collage(jobs: Sequence[Job], path: Path, title_of: dict[str, str]) -> Path | None:
    """Tile the last grid of each job (at most ``MAX_TILES``) into ``path``, titled by job.

    ``title_of`` maps a job's name to its title. Returns ``None`` when no job left a grid.
    """
    grids = [(job, grid) for job in jobs if (grid := last_grid(job)) is not None][:MAX_TILES]
    tiles = [(title_of.get(job.name, job.name), imread(grid)) for job, grid in grids]
    if not tiles:
        return None
    collage_figure(tiles).savefig(path, dpi=DPI)
    return path
