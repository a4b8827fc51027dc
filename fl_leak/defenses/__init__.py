"""Defenses against gradient leakage, by the names ``defense=<name>`` selects.

>>> sorted(list_defenses())
['clip_noise', 'dp_sgd', 'instahide', 'mixup', 'none', 'prune', 'secagg', 'topk']
>>> build_defense("prune", {"fraction": 0.5}).describe()
'fraction=0.5'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fl_leak.defenses import (  # noqa: F401  (registration of the built-in defenses)
    mixing,
    privacy,
    secure_aggregation,
    sparsify,
)
from fl_leak.defenses.base import (
    DEFENSES,
    Defense,
    LocalOutcome,
    LocalPool,
    register_defense,
)
from fl_leak.defenses.privacy import EPSILON_METRIC
from fl_leak.options import options_from

__all__ = [
    "DEFENSES",
    "EPSILON_METRIC",
    "Defense",
    "LocalOutcome",
    "LocalPool",
    "build_defense",
    "list_defenses",
    "register_defense",
]


def list_defenses() -> list[str]:
    """Names of the defenses ``build_defense`` knows, sorted."""
    return DEFENSES.names()


def build_defense(name: str, options: Mapping[str, Any] | None = None) -> Defense:
    """The defense ``name`` with ``options`` (its strength keys).

    Raises ``ValueError`` naming an unknown defense
    (:class:`~fl_leak.errors.UnknownDefenseError`), an unknown option or a bad value.
    """
    return options_from(DEFENSES.get(name), options or {}, f"defense {name!r}")
