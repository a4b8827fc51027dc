"""Architectures: the paper's CNN family by name, and a builder from layer specs."""

from fl_leak.models import extra, family  # noqa: F401  (registration of the built-in models)
from fl_leak.models.builder import SpecError, build_from_specs
from fl_leak.models.registry import UnknownModelError, build_model, list_models, register_model
from fl_leak.models.target import ModelSpec, ModelTargetError, model_name

__all__ = [
    "ModelSpec",
    "ModelTargetError",
    "SpecError",
    "UnknownModelError",
    "build_from_specs",
    "build_model",
    "list_models",
    "model_name",
    "register_model",
]
