"""Why an update the audit calls fully exposed was not reconstructed exactly.

An audit index of 0 says every layer's system is uniquely solvable in exact arithmetic, so the
linear attack should recover the input (``EXACT_PSNR`` or more). Where a run's reconstruction falls
short, the record says why, from what the run knows: a defense changed the update, FedAvg took
several local steps, a (leaky) ReLU output sat at the kink, the update is float32 (the solve
amplifies its rounding by the network's conditioning), or the solver stopped early.
"""

from __future__ import annotations

from fl_leak.attacks import Reconstruction
from fl_leak.records import LeakRecord

EXACT_PSNR = 60.0  # dB: what the tests and the docs call an exact reconstruction
SOLVE_ATTACKS = ("linear", "hybrid")  # the attacks whose exactness the audit predicts


def shortfall(record: LeakRecord, reconstruction: Reconstruction) -> str | None:
    """The reasons, ``; ``-joined, or None when there is nothing to explain.

    Read from the record: its attack, defense, dtype, steps and scores.
    """
    promised = record.audit_index == 0 and record.attack in SOLVE_ATTACKS
    if not promised or record.psnr is None or record.psnr >= EXACT_PSNR:
        return None
    reasons = []
    if record.defense not in (None, "none"):
        reasons.append(f"the {record.defense} defense changed the update")
    if record.steps is not None and record.steps > 1:
        reasons.append(f"the update is {record.steps} local steps (FedAvg), solved as one gradient")
    kinks = sum(layer.near_kink for layer in reconstruction.layers)
    if kinks:
        reasons.append(f"{kinks} ReLU outputs at the kink, their side decided by rounding")
    if record.dtype == "float32":
        error = record.gradient_relative_error
        size = "" if error is None else f" (gradient relative error {error:.1e})"
        reasons.append(
            f"float32 update{size}, amplified by the network's conditioning; "
            "dtype=float64 shows the exact-arithmetic result"
        )
    if any(layer.stop_reason.startswith("iteration limit") for layer in reconstruction.layers):
        reasons.append("the least-squares solve hit its iteration limit")
    return "; ".join(reasons) or "no known cause: please report it"
