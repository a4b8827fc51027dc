"""The oracle channel: ground truth that a client sends for scoring only, never to the attack.

A real server receives weights and metrics. To score a reconstruction, the simulation also needs
the images the client trained on; the client sends them in a separate ``ConfigRecord`` named
``oracle``. The server takes that record out of the reply (:func:`take_oracle`) before anything
else reads the reply, so neither the attack nor the aggregation ever sees it.
"""

from __future__ import annotations

from dataclasses import dataclass

from flwr.app import ConfigRecord, Message
from safetensors.torch import load, save
from torch import Tensor

from fl_leak.fl.values import record_bytes

ORACLE_KEY = "oracle"
_PAYLOAD = "tensors"


@dataclass(frozen=True)
class Oracle:
    """Ground truth of one update: the samples the client trained on, in the order of first use
    (the first local step's batch first, then each sample a later step took for the first time)."""

    inputs: Tensor
    labels: Tensor

    def first(self, count: int) -> Oracle:
        """The first ``count`` samples (the first step's batch: its size)."""
        if count > len(self.labels):
            raise ValueError(
                f"the oracle holds {len(self.labels)} samples, fewer than the {count} attacked"
            )
        return Oracle(self.inputs[:count], self.labels[:count])


def oracle_record(inputs: Tensor, labels: Tensor) -> ConfigRecord:
    """The record a client adds to its reply under ``ORACLE_KEY``."""
    payload = save({"inputs": inputs.detach().contiguous(), "labels": labels.contiguous()})
    return ConfigRecord({_PAYLOAD: payload})


def take_oracle(reply: Message) -> Oracle | None:
    """Remove the oracle record from ``reply`` (in place) and return its content.

    ``None`` when the reply carries none (an error reply, or a client that sends no ground truth).
    """
    if reply.has_error() or ORACLE_KEY not in reply.content:
        return None
    record = reply.content[ORACLE_KEY]
    del reply.content[ORACLE_KEY]
    tensors = load(record_bytes(record, _PAYLOAD))
    return Oracle(inputs=tensors["inputs"], labels=tensors["labels"])
