"""Flower simulation with a malicious server: clients, strategy, update-to-gradient, outputs.

``AttackSettings``, ``MaliciousStrategy`` and ``attach_oracle`` add fl-leak's attack to a Flower
app of one's own (:mod:`fl_leak.fl.malicious`). The names below are imported on first use, so that
light modules of this package (interrupts, the shortfall explanations) load without Flower.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fl_leak.lazy import lazy_getattr

_EXPORTS = {
    "AttackSettings": "fl_leak.fl.leakage",
    "ConfigError": "fl_leak.errors",
    "MaliciousStrategy": "fl_leak.fl.malicious",
    "attach_oracle": "fl_leak.fl.malicious",
    "check": "fl_leak.fl.validation",
    "problems": "fl_leak.fl.validation",
    "simulate": "fl_leak.fl.simulation",
}

__all__ = [
    "AttackSettings",
    "ConfigError",
    "MaliciousStrategy",
    "attach_oracle",
    "check",
    "problems",
    "simulate",
]

if TYPE_CHECKING:
    from fl_leak.errors import ConfigError
    from fl_leak.fl.leakage import AttackSettings
    from fl_leak.fl.malicious import MaliciousStrategy, attach_oracle
    from fl_leak.fl.simulation import simulate
    from fl_leak.fl.validation import check, problems

__getattr__ = lazy_getattr(__name__, _EXPORTS)
