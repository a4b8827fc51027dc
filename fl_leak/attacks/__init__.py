"""Attacks: the layerwise linear-system attack, its hybrid correction, and baselines."""

from fl_leak.attacks import baselines, linear  # noqa: F401  (registers the attacks)
from fl_leak.attacks.api import reconstruct
from fl_leak.attacks.registry import get_attack, list_attacks, register_attack
from fl_leak.attacks.result import LayerDiagnostics, Reconstruction

__all__ = [
    "LayerDiagnostics",
    "Reconstruction",
    "get_attack",
    "list_attacks",
    "reconstruct",
    "register_attack",
]
