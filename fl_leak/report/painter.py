"""Image grids of a run, drawn in a background thread while the next round trains."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter

import torch
from torch import Tensor

from fl_leak.report.grid import save_image_grid

GRID_MAX_IMAGES = 64


@dataclass
class RoundImages:
    """Originals and their matched reconstructions of one round, with a title per image."""

    originals: list[Tensor] = field(default_factory=list)
    reconstructions: list[Tensor] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)


class GridPainter:
    """Draws each round's grid into a PNG in one background thread; :meth:`finish` waits."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grid")
        self._pending: list[Future[float]] = []

    def submit(self, path: Path, images: RoundImages) -> Future[float]:
        """Start drawing ``images`` (at most ``GRID_MAX_IMAGES``) into ``path``; the future
        gives the seconds it took."""
        future = self._pool.submit(_draw, path, images)
        self._pending.append(future)
        return future

    def finish(self) -> None:
        """Wait for every grid (re-raising a drawing error)."""
        self._pool.shutdown(wait=True)
        for future in self._pending:
            future.result()


def _draw(path: Path, images: RoundImages) -> float:
    start = perf_counter()
    count = min(len(images.originals), GRID_MAX_IMAGES)
    save_image_grid(
        torch.stack(images.originals[:count]),
        torch.stack(images.reconstructions[:count]),
        path,
        titles=images.titles[:count],
        match=False,
    )
    return perf_counter() - start
