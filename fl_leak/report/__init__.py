"""Reports of runs: image grids; ``fl-leak-report``'s tables, plots and collage (``build``).

``save_image_grid`` is imported on first use, so that ``fl-leak-report --help`` and a refused
path do not pay for torch and matplotlib.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["save_image_grid"]

if TYPE_CHECKING:
    from fl_leak.report.grid import save_image_grid


def __getattr__(name: str) -> Any:
    """Import ``save_image_grid`` from :mod:`fl_leak.report.grid` on first access (PEP 562)."""
    if name != "save_image_grid":
        raise AttributeError(f"module 'fl_leak.report' has no attribute {name!r}")
    value = getattr(importlib.import_module("fl_leak.report.grid"), name)
    globals()[name] = value
    return value
