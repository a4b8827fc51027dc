"""The one registry behind every plug-in kind: models, attacks, defenses, data sets, layer types.

A :class:`Registry` maps a key (a name, or a module type for layer adapters) to a plug-in and a
display name. Registering a key or a name twice is an error, and asking for an unknown one raises
an error that lists the known names::

    >>> colours = Registry[str, int]("colour")
    >>> _ = colours.register("red")(1)
    >>> colours.get("red"), colours.names(), "blue" in colours
    (1, ['red'], False)
    >>> colours.get("blue")
    Traceback (most recent call last):
    ...
    fl_leak.errors.UnknownNameError: unknown colour 'blue'; known colours: red
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from fl_leak.errors import DuplicateNameError, FlLeakError, UnknownNameError

K = TypeVar("K")
T = TypeVar("T")


def _default_name(key: object) -> str:
    return key.__name__.lower() if isinstance(key, type) else str(key)


class Registry(Generic[K, T]):
    """Plug-ins of one ``kind``, by key, each with a display name.

    Parameters
    ----------
    kind : str
        What the plug-ins are, singular (``"model"``, ``"data set"``); error messages use it.
    plural : str, optional
        Its plural; ``kind + "s"`` when not given.
    error : type of FlLeakError
        Raised by :meth:`get` and :meth:`key_named` for an unknown key or name.
    """

    def __init__(
        self,
        kind: str,
        plural: str | None = None,
        error: type[FlLeakError] = UnknownNameError,
    ) -> None:
        self.kind = kind
        self.plural = plural or f"{kind}s"
        self.error = error
        self._entries: dict[K, tuple[str, T]] = {}

    def register(self, key: K, name: str | None = None) -> Callable[[T], T]:
        """A decorator that registers its argument under ``key`` (and ``name``, by default the
        key itself, or a type's lower-case class name) and returns it unchanged."""

        def decorate(plugin: T) -> T:
            self.add(key, plugin, name)
            return plugin

        return decorate

    def add(self, key: K, plugin: T, name: str | None = None) -> None:
        """Register ``plugin`` under ``key``; a key or a name already taken is refused."""
        name = _default_name(key) if name is None else name
        if key in self._entries or name in self.names():
            raise DuplicateNameError(f"a {self.kind} named {name!r} is already registered")
        self._entries[key] = (name, plugin)

    def get(self, key: K) -> T:
        """The plug-in registered under ``key``; the error lists the known names."""
        if key not in self._entries:
            raise self._unknown(_default_name(key))
        return self._entries[key][1]

    def find(self, key: K) -> T | None:
        """The plug-in registered under ``key``, or None."""
        entry = self._entries.get(key)
        return entry[1] if entry else None

    def name_of(self, key: K) -> str:
        """The display name of ``key``."""
        if key not in self._entries:
            raise self._unknown(_default_name(key))
        return self._entries[key][0]

    def key_named(self, name: str) -> K:
        """The key registered with display name ``name``."""
        for key, (known, _) in self._entries.items():
            if known == name:
                return key
        raise self._unknown(name)

    def names(self) -> list[str]:
        """Every display name, sorted."""
        return sorted(name for name, _ in self._entries.values())

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[K]:
        """The keys, in registration order."""
        return iter(list(self._entries))

    def _unknown(self, name: str) -> FlLeakError:
        return self.error(
            f"unknown {self.kind} {name!r}; known {self.plural}: {', '.join(self.names())}"
        )


__all__ = ["Registry"]
