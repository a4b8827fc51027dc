"""Plug-in options as data: a frozen dataclass per plug-in, built and checked before any work.

:func:`options_from` refuses a key that is not a field of the dataclass, naming it and listing
the fields; the dataclass's ``__post_init__`` refuses values out of range with the checks below,
each naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeGuard, TypeVar

import torch

from fl_leak.errors import FlLeakError, UnknownOptionError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

OptionsT = TypeVar("OptionsT", bound="DataclassInstance")

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def options_from(cls: type[OptionsT], options: Mapping[str, Any], owner: str) -> OptionsT:
    """``cls(**options)`` for a dataclass ``cls`` of declared options.

    A key that is not a field of ``cls`` raises :class:`~fl_leak.errors.UnknownOptionError`
    naming it (and the closest field, if any) and listing every field; the dataclass's own
    checks refuse values out of range. ``owner`` names whose options they are, e.g.
    ``"attack 'linear'"``.

    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Options:
    ...     fraction: float = 0.5
    >>> options_from(Options, {"fractoin": 0.1}, "defense 'prune'")
    Traceback (most recent call last):
    ...
    fl_leak.errors.UnknownOptionError: unknown option 'fractoin' for defense 'prune' (did you mean 'fraction'?); its options: fraction
    """  # noqa: E501
    known = [field.name for field in dataclasses.fields(cls)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownOptionError(
            f"unknown option {key!r} for {owner}{hint}; its options: {', '.join(known) or 'none'}"
        )
    return cls(**options)


def _is_number(value: object) -> TypeGuard[int | float]:
    return not isinstance(value, bool) and isinstance(value, int | float)


def check_positive_int(name: str, value: object, optional: bool = False) -> None:
    """Raise ``FlLeakError`` unless ``value`` is a positive integer (or ``None`` if optional)."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        allowed = "a positive integer or None" if optional else "a positive integer"
        raise FlLeakError(f"{name} must be {allowed}, got {value!r}")


def check_non_negative_int(name: str, value: object) -> None:
    """Raise ``FlLeakError`` unless ``value`` is an integer >= 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FlLeakError(f"{name} must be a non-negative integer, got {value!r}")


def check_positive(name: str, value: object) -> None:
    """Raise ``FlLeakError`` unless ``value`` is a number > 0."""
    if not (_is_number(value) and value > 0):
        raise FlLeakError(f"{name} must be a positive number, got {value!r}")


def check_non_negative(name: str, value: object) -> None:
    """Raise ``FlLeakError`` unless ``value`` is a number >= 0."""
    if not (_is_number(value) and value >= 0):
        raise FlLeakError(f"{name} must be a non-negative number, got {value!r}")


def check_one_of(name: str, value: object, allowed: Sequence[object]) -> None:
    """Raise ``FlLeakError`` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise FlLeakError(f"{name} must be one of {tuple(allowed)}, got {value!r}")


def check_range(name: str, value: object, optional: bool = True) -> None:
    """Raise ``FlLeakError`` unless ``value`` is ``(low, high)`` with ``low < high`` (or None)."""
    if optional and value is None:
        return
    if not (
        isinstance(value, Sequence)
        and len(value) == 2
        and all(_is_number(v) for v in value)
        and value[0] < value[1]
    ):
        raise FlLeakError(f"{name} must be (low, high) with low < high, got {value!r}")


def torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"float32"``/``"float64"`` (or the torch dtypes themselves) as a torch dtype."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise FlLeakError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")


def torch_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device; ``FlLeakError`` if torch does not know it."""
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise FlLeakError(f"device must be a torch device, got {device!r}: {error}") from None
