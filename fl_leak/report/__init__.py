"""Reports of runs: image grids; ``fl-leak-report``'s tables, plots and collage (``build``)."""

from fl_leak.report.grid import save_image_grid

__all__ = ["save_image_grid"]
