"""Optimisation baselines that work on any differentiable model: ``dlg`` and ``ig``."""

from fl_leak.attacks.baselines import dlg, ig  # noqa: F401  (registers "dlg", "ig")
