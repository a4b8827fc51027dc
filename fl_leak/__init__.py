"""fl-leak: how much training data leaks from federated-learning updates.

>>> import fl_leak
>>> "linear" in fl_leak.list_attacks()
True
"""

from fl_leak.attacks import LayerDiagnostics, Reconstruction, list_attacks, reconstruct
from fl_leak.metrics.audit import AuditReport, audit
from fl_leak.models import build_model, list_models

__version__ = "0.1.0"

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
]
