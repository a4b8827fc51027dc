"""Secure aggregation: Flower's SecAgg+, under which the server sees only the sum of updates.

The round runs on Flower's legacy path (see :mod:`fl_leak.fl.secagg`); the malicious server then
attacks the aggregate as one batch of every client's samples.
"""

from __future__ import annotations

from dataclasses import dataclass

from fl_leak.defenses.base import Defense, register_defense


@register_defense("secagg")
@dataclass(frozen=True)
class SecAgg(Defense):
    """SecAgg+ with ``num_shares`` shares of each client's secret and ``reconstruction_threshold``
    of them needed to unmask (Flower's ``SecAggPlusWorkflow``; values above the number of clients
    are capped to it)."""

    secure_aggregation = True
    num_shares: int = 3
    reconstruction_threshold: int = 2

    def __post_init__(self) -> None:
        if self.num_shares < 3:
            raise ValueError(
                f"num_shares={self.num_shares} must be at least 3 (Flower's SecAgg+: a client and "
                "a neighbour on each side; capped to the number of clients)"
            )
        if not 2 <= self.reconstruction_threshold <= self.num_shares:
            raise ValueError(
                f"reconstruction_threshold={self.reconstruction_threshold} must be in "
                f"[2, num_shares={self.num_shares}]"
            )
