"""Attacks on multi-step FedAvg updates: ``fedavg_hybrid`` (the batch solve along the simulated
local trajectory) and ``fedavg_unroll`` (optimisation through the unrolled local training)."""

from fl_leak.attacks.fedavg import (
    trajectory,  # noqa: F401  (registers "fedavg_hybrid")
    unroll,  # noqa: F401  (registers "fedavg_unroll")
)
