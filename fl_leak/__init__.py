"""fl-leak: how much training data leaks from federated-learning updates.

The public names are imported on first use, so that ``import fl_leak.config`` (every command's
start, ``--help`` included) does not pay for the attacks, the audit or Flower.

>>> import fl_leak
>>> "linear" in fl_leak.list_attacks()
True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fl_leak.lazy import lazy_getattr

__version__ = "0.1.0"

_EXPORTS = {
    "AuditReport": "fl_leak.metrics.audit",
    "LayerDiagnostics": "fl_leak.attacks",
    "Reconstruction": "fl_leak.attacks",
    "audit": "fl_leak.metrics.audit",
    "build_model": "fl_leak.models",
    "list_attacks": "fl_leak.attacks",
    "list_models": "fl_leak.models",
    "reconstruct": "fl_leak.attacks",
    "recover_labels": "fl_leak.attacks.label_recovery",
}

__all__ = [
    "AuditReport",
    "LayerDiagnostics",
    "Reconstruction",
    "__version__",
    "audit",
    "build_model",
    "list_attacks",
    "list_models",
    "reconstruct",
    "recover_labels",
]

if TYPE_CHECKING:
    from fl_leak.attacks import LayerDiagnostics, Reconstruction, list_attacks, reconstruct
    from fl_leak.attacks.label_recovery import recover_labels
    from fl_leak.metrics.audit import AuditReport, audit
    from fl_leak.models import build_model, list_models

__getattr__ = lazy_getattr(__name__, _EXPORTS)
