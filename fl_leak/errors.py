"""Errors raised on bad input, each naming what is wrong before any work is done."""

from __future__ import annotations


class FlLeakError(ValueError):
    """Base class of fl-leak's input errors."""


class UnsupportedLayerError(FlLeakError):
    """A layer that the linear-system attack cannot express (BatchNorm, max pooling, ...)."""

    def __init__(self, path: str, layer: object, reason: str = "") -> None:
        kind = type(layer).__name__
        detail = f": {reason}" if reason else ""
        super().__init__(
            f"layer '{path}' ({kind}) is not supported by the linear-system attack{detail}. "
            "The optimisation attacks (attack='ig' or attack='dlg') work on any differentiable "
            "model."
        )
        self.path = path
        self.layer_type = kind
        self.reason = reason


class GradientMismatchError(FlLeakError):
    """Gradients that do not line up with ``model.parameters()`` (count or shapes)."""


class InvalidGradientError(FlLeakError):
    """Gradients holding NaN or Inf values."""


class InputShapeError(FlLeakError):
    """An ``input_shape`` that the model cannot take."""


class UnknownNameError(FlLeakError, KeyError):
    """A name that no plug-in of its kind is registered under; the message lists the known ones.

    Also a ``KeyError``, since it is a failed look-up.
    """

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DuplicateNameError(FlLeakError):
    """A plug-in registered under a key or name already taken."""


class UnknownOptionError(FlLeakError):
    """An option that the plug-in does not declare; the message lists the ones it does."""


class UnknownAttackError(UnknownNameError):
    """An attack name that no attack is registered under."""


class UnknownModelError(UnknownNameError):
    """A model name that no factory is registered under."""


class UnknownDatasetError(UnknownNameError):
    """A data set name that no loader is registered under."""


class UnknownDefenseError(UnknownNameError):
    """A defense name that no defense is registered under."""


class ConfigError(FlLeakError):
    """Settings that cannot run; the message lists every problem found."""
