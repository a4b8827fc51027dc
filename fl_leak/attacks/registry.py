"""Name -> attack registry behind :func:`fl_leak.reconstruct`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from torch import Tensor, nn

from fl_leak.attacks.result import Reconstruction
from fl_leak.errors import UnknownAttackError


class Attack(Protocol):
    """An attack: the server's view (model, gradients, public knowledge) -> a reconstruction."""

    def __call__(
        self,
        model: nn.Module,
        gradients: Sequence[Tensor],
        input_shape: tuple[int, ...],
        batch_size: int,
        labels: Tensor | None,
        **options: Any,
    ) -> Reconstruction: ...


_ATTACKS: dict[str, Attack] = {}


def register_attack(name: str) -> Callable[[Attack], Attack]:
    """Register an attack function under ``name`` (refuses duplicates)."""

    def decorate(attack: Attack) -> Attack:
        if name in _ATTACKS:
            raise ValueError(f"an attack named {name!r} is already registered")
        _ATTACKS[name] = attack
        return attack

    return decorate


def get_attack(name: str) -> Attack:
    """The attack registered as ``name``; the error lists the known names."""
    if name not in _ATTACKS:
        raise UnknownAttackError(
            f"unknown attack {name!r}; known attacks: {', '.join(list_attacks())}"
        )
    return _ATTACKS[name]


def list_attacks() -> list[str]:
    """Every registered attack name, sorted."""
    return sorted(_ATTACKS)
