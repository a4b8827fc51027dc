"""Flower simulation with a malicious server: clients, strategy, update-to-gradient, outputs.

The names below are imported on first use, so that light modules of this package (interrupts,
the shortfall explanations) load without Flower.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fl_leak.lazy import lazy_getattr

_EXPORTS = {
    "ConfigError": "fl_leak.errors",
    "check": "fl_leak.fl.validation",
    "problems": "fl_leak.fl.validation",
    "simulate": "fl_leak.fl.simulation",
}

__all__ = ["ConfigError", "check", "problems", "simulate"]

if TYPE_CHECKING:
    from fl_leak.errors import ConfigError
    from fl_leak.fl.simulation import simulate
    from fl_leak.fl.validation import check, problems

__getattr__ = lazy_getattr(__name__, _EXPORTS)
