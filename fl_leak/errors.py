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


class GradientMismatchError(FlLeakError):
    """Gradients that do not line up with ``model.parameters()`` (count or shapes)."""


class InvalidGradientError(FlLeakError):
    """Gradients holding NaN or Inf values."""


class InputShapeError(FlLeakError):
    """An ``input_shape`` that the model cannot take."""


class UnknownAttackError(FlLeakError):
    """An attack name that no attack is registered under."""


class ConfigError(FlLeakError):
    """Settings that cannot run; the message lists every problem found."""
