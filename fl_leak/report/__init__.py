"""Reports of runs: image grids."""

from fl_leak.report.grid import save_image_grid

__all__ = ["save_image_grid"]
