"""Name -> attack registry behind :func:`fl_leak.reconstruct`, with each attack's options as data.

An attack is registered with the dataclass of its options; every call builds that dataclass from
the keyword options first (:func:`build_attack_options`), so a misspelt key or a value out of
range is refused, naming the key, before any work, and the attack itself receives the checked
dataclass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from torch import Tensor, nn

from fl_leak.attacks.result import Reconstruction
from fl_leak.errors import UnknownAttackError
from fl_leak.options import options_from
from fl_leak.registry import Registry
from fl_leak.threads import DEFAULT_THREADS, torch_threads

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

OptionsT = TypeVar("OptionsT", bound="DataclassInstance")
OptionsT_contra = TypeVar("OptionsT_contra", bound="DataclassInstance", contravariant=True)


ModelCheck = Callable[[nn.Module, tuple[int, ...]], None]


class Attack(Protocol):
    """An attack: the server's view (model, gradients, public knowledge) -> a reconstruction."""

    def __call__(
        self,
        model: nn.Module,
        gradients: Sequence[Tensor],
        input_shape: tuple[int, ...],
        batch_size: int = 1,
        labels: Tensor | None = None,
        **options: Any,
    ) -> Reconstruction: ...


class AttackRunner(Protocol[OptionsT_contra]):
    """What a registered attack implements: the server's view and its checked options."""

    def __call__(
        self,
        model: nn.Module,
        gradients: Sequence[Tensor],
        input_shape: tuple[int, ...],
        batch_size: int,
        labels: Tensor | None,
        options: OptionsT_contra,
    ) -> Reconstruction: ...


@dataclass(frozen=True)
class RegisteredAttack(Generic[OptionsT]):
    """An attack's runner and the dataclass of its options; callable as an :class:`Attack`."""

    name: str
    run: AttackRunner[OptionsT]
    options: type[OptionsT]
    accepts: ModelCheck | None = None

    def build_options(self, options: Mapping[str, Any]) -> OptionsT:
        """The checked options (see :func:`build_attack_options`)."""
        return options_from(self.options, options, f"attack {self.name!r}")

    def __call__(
        self,
        model: nn.Module,
        gradients: Sequence[Tensor],
        input_shape: tuple[int, ...],
        batch_size: int = 1,
        labels: Tensor | None = None,
        **options: Any,
    ) -> Reconstruction:
        """Check the options, then run the attack inside :func:`~fl_leak.threads.torch_threads`
        with the options' ``threads`` (the default where they declare none); ``seconds`` is the
        whole call's."""
        parsed = self.build_options(options)
        start = time.perf_counter()
        with torch_threads(getattr(parsed, "threads", DEFAULT_THREADS)):
            reconstruction = self.run(
                model, gradients, tuple(input_shape), batch_size, labels, parsed
            )
        reconstruction.seconds = time.perf_counter() - start
        return reconstruction


ATTACKS: Registry[str, RegisteredAttack[Any]] = Registry("attack", error=UnknownAttackError)


def register_attack(
    name: str, options: type[OptionsT], accepts: ModelCheck | None = None
) -> Callable[[AttackRunner[OptionsT]], AttackRunner[OptionsT]]:
    """Register ``run(model, gradients, input_shape, batch_size, labels, options)`` under ``name``;
    ``options`` is the frozen dataclass of its options (its ``__post_init__`` checks ranges);
    ``accepts(model, input_shape)`` raises a :class:`~fl_leak.errors.FlLeakError` naming what the
    attack cannot handle in a model (None: it takes any differentiable model)."""

    def decorate(run: AttackRunner[OptionsT]) -> AttackRunner[OptionsT]:
        ATTACKS.add(name, RegisteredAttack(name, run, options, accepts))
        return run

    return decorate


def check_attack_model(name: str, model: nn.Module, input_shape: Sequence[int]) -> None:
    """Raise :class:`~fl_leak.errors.FlLeakError` if attack ``name`` cannot attack ``model``
    (an unsupported layer, named, with the attacks that handle it)."""
    accepts = ATTACKS.get(name).accepts
    if accepts is not None:
        accepts(model, tuple(input_shape))


def get_attack(name: str) -> Attack:
    """The attack registered as ``name``; the error lists the known names."""
    return ATTACKS.get(name)


def list_attacks() -> list[str]:
    """Every registered attack name, sorted."""
    return ATTACKS.names()


def attack_options(name: str) -> type[DataclassInstance]:
    """The dataclass declaring the options of attack ``name`` (its fields and defaults)."""
    return ATTACKS.get(name).options


def build_attack_options(name: str, options: Mapping[str, Any]) -> DataclassInstance:
    """Attack ``name``'s options dataclass built from ``options``.

    Raises :class:`~fl_leak.errors.UnknownAttackError` for an unknown attack,
    :class:`~fl_leak.errors.UnknownOptionError` naming a key the attack does not declare (with
    the ones it does), and :class:`~fl_leak.errors.FlLeakError` naming a value out of range.
    """
    return ATTACKS.get(name).build_options(options)


def check_attack_options(name: str, options: Mapping[str, Any]) -> None:
    """Raise as :func:`build_attack_options` does if ``options`` cannot run attack ``name``.

    >>> check_attack_options("linear", {"tolerence": 1e-8})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    fl_leak.errors.UnknownOptionError: unknown option 'tolerence' for attack 'linear' (did...
    """
    build_attack_options(name, options)
