"""A client's data: its partition of the training split, and the batches of one round's training.

Everything here is a function of the settings, the partition id and the round, so a client
recomputes it inside its Ray worker (only settings travel) and the same seed gives the same batches.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from fl_leak.config import DataConfig, LocalData, RunConfig
from fl_leak.data import ImageDataset, load_dataset, partition_indices
from fl_leak.data.target import load_target_dataset
from fl_leak.schedule import LocalSchedule as LocalSchedule
from fl_leak.schedule import step_count

DataKey = tuple[str, str | None, bool, str]  # name, root, download, factory as JSON


def _key(data: DataConfig) -> DataKey:
    return (data.name, data.root, data.download, json.dumps(data.factory, sort_keys=True))


@lru_cache(maxsize=4)
def _load(key: DataKey, train: bool) -> ImageDataset:
    name, root, download, factory = key
    if data_factory := json.loads(factory):
        return load_target_dataset(name, data_factory, train)
    return load_dataset(name, root=root, train=train, download=download)


def load_split(data: DataConfig, train: bool) -> ImageDataset:
    """A split of the configured data set (a registered one, or ``data.factory``'s), loaded once
    per process."""
    return _load(_key(data), train)


@lru_cache(maxsize=8)
def _partitions(
    key: DataKey, num_clients: int, scheme: str, alpha: float, seed: int
) -> tuple[np.ndarray, ...]:
    labels = _load(key, train=True).labels.numpy()
    return tuple(partition_indices(labels, num_clients, scheme, alpha, seed))


def partitions(settings: RunConfig) -> tuple[np.ndarray, ...]:
    """Every client's sample indices in the training split."""
    fl = settings.fl
    return _partitions(
        _key(settings.data), fl.num_clients, fl.partition.value, fl.alpha, settings.seed
    )


def round_seed(seed: int, server_round: int, partition_id: int) -> int:
    """A seed that depends on (seed, round, partition) only."""
    return int(np.random.SeedSequence([seed, server_round, partition_id]).generate_state(1)[0])


@dataclass(frozen=True)
class RoundPlan:
    """A client's training in one round: the samples it holds, and each step's batch."""

    samples: Tensor
    steps: list[Tensor]

    @property
    def target(self) -> Tensor:
        """The batch of the first step: what a batch attack tries to reconstruct."""
        return self.steps[0]

    @property
    def trained(self) -> Tensor:
        """Every sample the steps take, once, in the order of first use (the first step's batch
        first): what a FedAvg attack tries to reconstruct, and what the oracle carries."""
        visits = torch.cat(self.steps)
        return torch.tensor(list(dict.fromkeys(visits.tolist())), dtype=visits.dtype)


def round_plan(
    settings: RunConfig, partition_id: int, server_round: int, indices: np.ndarray | None = None
) -> RoundPlan:
    """Which samples a client trains on this round, and in which batches.

    With ``local_data=batch`` the client draws ``batch_size`` samples of its partition and takes
    every step on them; with ``partition`` it passes over its whole partition, reshuffled each
    epoch, in mini-batches of ``batch_size``. ``indices``: the client's samples (default: its
    partition of the run's data set).
    """
    fl = settings.fl
    generator = torch.Generator().manual_seed(round_seed(settings.seed, server_round, partition_id))
    own = torch.from_numpy(partitions(settings)[partition_id] if indices is None else indices)
    if len(own) < fl.batch_size:
        raise ValueError(
            f"partition {partition_id} holds {len(own)} samples, fewer than "
            f"fl.batch_size={fl.batch_size}"
        )
    if fl.local_data is LocalData.batch:
        own = own[torch.randperm(len(own), generator=generator)[: fl.batch_size]]
    count = step_count(fl, len(own))
    steps: list[Tensor] = []
    while len(steps) < count:
        shuffled = own[torch.randperm(len(own), generator=generator)]
        steps.extend(shuffled.split(fl.batch_size))
    return RoundPlan(samples=own, steps=steps[:count])
