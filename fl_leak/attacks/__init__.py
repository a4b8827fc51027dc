"""Attacks: the layerwise linear-system attack, its hybrid correction, and baselines."""

from fl_leak.attacks import baselines, fedavg, linear  # noqa: F401  (registers the attacks)
from fl_leak.attacks.api import reconstruct
from fl_leak.attacks.registry import (
    ATTACKS,
    attack_options,
    build_attack_options,
    check_attack_model,
    check_attack_options,
    get_attack,
    list_attacks,
    register_attack,
)
from fl_leak.attacks.result import LayerDiagnostics, Reconstruction

__all__ = [
    "ATTACKS",
    "LayerDiagnostics",
    "Reconstruction",
    "attack_options",
    "build_attack_options",
    "check_attack_model",
    "check_attack_options",
    "get_attack",
    "list_attacks",
    "reconstruct",
    "register_attack",
]
