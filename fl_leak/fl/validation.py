"""Checks of a run's settings before anything starts, each problem naming the bad value."""

from __future__ import annotations

import torch

from fl_leak.attacks import list_attacks
from fl_leak.config import Partition, RunConfig
from fl_leak.data import list_datasets
from fl_leak.defenses import build_defense, list_defenses
from fl_leak.errors import FlLeakError
from fl_leak.fl.local_data import load_split, partitions
from fl_leak.fl.task import initial_model
from fl_leak.models import list_models


class ConfigError(FlLeakError):
    """Settings that cannot run; the message lists every problem found."""


def _ranges(settings: RunConfig) -> list[str]:
    fl = settings.fl
    rules = [
        (fl.num_clients >= 1, f"fl.num_clients={fl.num_clients} must be at least 1"),
        (fl.rounds >= 1, f"fl.rounds={fl.rounds} must be at least 1"),
        (fl.batch_size >= 1, f"fl.batch_size={fl.batch_size} must be at least 1"),
        (fl.local_steps >= 1, f"fl.local_steps={fl.local_steps} must be at least 1"),
        (fl.local_epochs >= 0, f"fl.local_epochs={fl.local_epochs} must not be negative"),
        (fl.lr > 0, f"fl.lr={fl.lr} must be positive"),
        (
            fl.partition is not Partition.dirichlet or fl.alpha > 0,
            f"fl.alpha={fl.alpha} must be positive",
        ),
        (0 < fl.fraction_train <= 1, f"fl.fraction_train={fl.fraction_train} must be in (0, 1]"),
        (
            0 <= fl.fraction_evaluate <= 1,
            f"fl.fraction_evaluate={fl.fraction_evaluate} must be in [0, 1]",
        ),
        (fl.client_cpus > 0, f"fl.client_cpus={fl.client_cpus} must be positive"),
        (fl.round_timeout > 0, f"fl.round_timeout={fl.round_timeout} must be positive"),
        (
            all(1 <= server_round <= fl.rounds for server_round in fl.attack_rounds),
            f"fl.attack_rounds={fl.attack_rounds} must name rounds 1..{fl.rounds}",
        ),
        (
            all(0 <= client < fl.num_clients for client in fl.fault.clients),
            f"fl.fault.clients={fl.fault.clients} must name clients 0..{fl.num_clients - 1}",
        ),
    ]
    return [message for ok, message in rules if not ok]


def _names(settings: RunConfig) -> list[str]:
    known = {
        "model": (settings.model, list_models()),
        "attack": (settings.attack.name, list_attacks()),
        "data": (settings.data.name, list_datasets()),
        "defense": (settings.defense.name, list_defenses()),
    }
    return [
        f"{key}={value!r} is unknown; known: {', '.join(names)}"
        for key, (value, names) in known.items()
        if value not in names
    ]


def _defense(settings: RunConfig) -> list[str]:
    try:
        build_defense(settings.defense.name, settings.defense.options)
    except (TypeError, ValueError) as error:
        return [f"defense={settings.defense.name!r}: {error}"]
    return []


def _secure_aggregation(settings: RunConfig) -> list[str]:
    """SecAgg+ needs two clients; its scorer recomputes every client's batch, so all must train."""
    if not build_defense(settings.defense.name, settings.defense.options).secure_aggregation:
        return []
    fl, name = settings.fl, settings.defense.name
    rules = [
        (
            fl.num_clients >= 2,
            f"defense={name!r} needs fl.num_clients >= 2 (SecAgg+ masks with other clients), "
            f"got {fl.num_clients}",
        ),
        (
            fl.fraction_train == 1,
            f"defense={name!r} needs fl.fraction_train=1, got {fl.fraction_train}: the server "
            "scores the attack on the aggregate against every client's batch, which it "
            "recomputes from the settings, so every client must train in every round",
        ),
        (
            not fl.fault.clients,
            f"defense={name!r} does not run with fl.fault.clients={fl.fault.clients}: the server "
            "scores the attack on the aggregate against every client's batch, so no client may "
            "drop out",
        ),
    ]
    return [message for ok, message in rules if not ok]


def _device(settings: RunConfig) -> list[str]:
    try:
        device = torch.device(settings.device)
    except RuntimeError as error:
        return [f"device={settings.device!r} is not a device: {error}"]
    if device.type == "cuda" and not torch.cuda.is_available():
        return [f"device={settings.device!r}: no CUDA device is available"]
    return []


def _data(settings: RunConfig) -> list[str]:
    fl = settings.fl
    try:
        train = load_split(settings.data, train=True)
        load_split(settings.data, train=False)
    except (OSError, RuntimeError, ValueError) as error:
        return [f"data={settings.data.name!r} cannot be loaded: {error}"]
    if fl.num_clients > len(train):
        return [
            f"fl.num_clients={fl.num_clients} is more than the {len(train)} training samples "
            f"of data={settings.data.name!r}"
        ]
    problems = []
    smallest = min(len(part) for part in partitions(settings))
    if fl.batch_size > smallest:
        problems.append(
            f"fl.batch_size={fl.batch_size} is more than the {smallest} samples of the smallest "
            f"client partition ({len(train)} samples, fl.num_clients={fl.num_clients}, "
            f"fl.partition={fl.partition.value})"
        )
    try:
        initial_model(settings, train.info)
    except (FlLeakError, ValueError, RuntimeError) as error:
        problems.append(
            f"model={settings.model!r} does not fit data={settings.data.name!r}: {error}"
        )
    return problems


def problems(settings: RunConfig) -> list[str]:
    """Every problem of ``settings``; empty when it can run."""
    found = _ranges(settings) + _names(settings) + _device(settings)
    if not found:
        found = _defense(settings)
    if not found:
        found = _secure_aggregation(settings)
    if found:
        return found
    return _data(settings)


def check(settings: RunConfig) -> None:
    """Raise :class:`ConfigError` listing every problem of ``settings``."""
    found = problems(settings)
    if found:
        raise ConfigError("invalid settings:\n  " + "\n  ".join(found))
