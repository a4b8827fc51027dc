"""Defenses against gradient leakage, by the names ``defense=<name>`` selects.

>>> sorted(list_defenses())
['clip_noise', 'dp_sgd', 'instahide', 'mixup', 'none', 'prune', 'secagg', 'topk']
>>> build_defense("prune", {"fraction": 0.5}).describe()
'fraction=0.5'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from fl_leak.defenses.base import Defense, LocalOutcome, LocalPool
from fl_leak.defenses.mixing import InstaHide, MixUp
from fl_leak.defenses.privacy import EPSILON_METRIC, ClipNoise, DpSgd
from fl_leak.defenses.secure_aggregation import SecAgg
from fl_leak.defenses.sparsify import Prune, TopK

__all__ = [
    "EPSILON_METRIC",
    "Defense",
    "LocalOutcome",
    "LocalPool",
    "build_defense",
    "list_defenses",
]

_DEFENSES: dict[str, type[Defense]] = {
    cls.name: cls for cls in (Defense, Prune, TopK, ClipNoise, DpSgd, MixUp, InstaHide, SecAgg)
}


def list_defenses() -> list[str]:
    """Names of the defenses ``build_defense`` knows."""
    return list(_DEFENSES)


def build_defense(name: str, options: Mapping[str, Any] | None = None) -> Defense:
    """The defense ``name`` with ``options`` (its strength keys).

    Raises ``ValueError`` naming an unknown defense, an unknown option or a bad value.
    """
    if name not in _DEFENSES:
        raise ValueError(f"defense={name!r} is unknown; known: {', '.join(_DEFENSES)}")
    cls = _DEFENSES[name]
    known = [field.name for field in fields(cls)]
    unknown = sorted(set(options or {}) - set(known))
    if unknown:
        raise ValueError(
            f"defense.options.{unknown[0]} is not an option of {name}; "
            f"its options: {', '.join(known) or 'none'}"
        )
    return cls(**dict(options or {}))
