"""One image of many jobs' grids: each job's last round of originals above reconstructions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.image import imread

from fl_leak.records import GRID_FILE
from fl_leak.report.jobs import Job

TILE = (5.0, 3.2)  # inches per job
COLUMNS = 3
MAX_TILES = 36
DPI = 72


def last_grid(job: Job) -> Path | None:
    """The job's image grid of its last round, if it wrote any."""
    pattern = GRID_FILE.format(round="*")
    grids = sorted(job.directory.glob(pattern), key=lambda path: int(path.stem.rsplit("_", 1)[1]))
    return grids[-1] if grids else None


def save_collage(jobs: Sequence[Job], path: Path, title_of: dict[str, str]) -> Path | None:
    """Tile the last grid of each job (at most ``MAX_TILES``) into ``path``, titled by job.

    ``title_of`` maps a job's name to its title. Returns ``None`` when no job left a grid.
    """
    tiles = [(job, grid) for job in jobs if (grid := last_grid(job)) is not None][:MAX_TILES]
    if not tiles:
        return None
    columns = min(COLUMNS, len(tiles))
    rows = math.ceil(len(tiles) / columns)
    figure = Figure(figsize=(TILE[0] * columns, TILE[1] * rows), layout="constrained")
    axes = list(figure.subplots(rows, columns, squeeze=False).flat)
    for ax in axes:
        ax.axis("off")
    for ax, (job, grid) in zip(axes, tiles, strict=False):
        ax.imshow(imread(grid))
        ax.set_title(title_of.get(job.name, job.name), fontsize=8)
    figure.savefig(path, dpi=DPI)
    return path
