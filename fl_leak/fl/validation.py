"""Checks of a run's settings before anything starts, each problem naming the bad value.

The checks of single values need nothing but the settings (:func:`fl_leak.config.range_problems`,
cheap enough to run before anything heavy is imported); these add the registries and the data.
"""

from __future__ import annotations

import torch

from fl_leak.attacks import check_attack_model, check_attack_options, list_attacks
from fl_leak.attacks.fedavg.schedule import server_schedule, with_schedule
from fl_leak.config import RunConfig, attack_options_of, range_problems
from fl_leak.data import list_datasets
from fl_leak.defenses import build_defense, list_defenses
from fl_leak.errors import ConfigError, FlLeakError
from fl_leak.fl.local_data import load_split, partitions
from fl_leak.fl.task import initial_model
from fl_leak.models import list_models, model_name


def _names(settings: RunConfig) -> list[str]:
    known = {
        "attack": (settings.attack.name, list_attacks()),
        "defense": (settings.defense.name, list_defenses()),
    }
    if isinstance(settings.model, str):  # else a _target_ mapping, checked when it is built
        known["model"] = (settings.model, list_models())
    if settings.data.factory is None:  # else named freely, checked when it is loaded
        known["data"] = (settings.data.name, list_datasets())
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
        model = initial_model(settings, train.info)
    except (FlLeakError, ValueError, RuntimeError) as error:
        problems.append(
            f"model={model_name(settings.model)!r} does not fit data={settings.data.name!r}: "
            f"{error}"
        )
        return problems
    try:
        check_attack_model(settings.attack.name, model, train.info.input_shape)
    except FlLeakError as error:
        model_text = f"model={model_name(settings.model)!r}"
        problems.append(f"attack={settings.attack.name!r} cannot attack {model_text}: {error}")
    return problems


def _attack_options(settings: RunConfig) -> list[str]:
    """The attack's options, as the run passes them (a FedAvg attack's with the clients'
    schedule), checked by the attack's declaration."""
    schedule = server_schedule(settings.fl)
    try:
        options = with_schedule(settings.attack.name, attack_options_of(settings), schedule)
        check_attack_options(settings.attack.name, options)
    except FlLeakError as error:
        return [f"attack={settings.attack.name!r}: {error}"]
    return []


def problems(settings: RunConfig) -> list[str]:
    """Every problem of ``settings``; empty when it can run."""
    found = range_problems(settings) + _names(settings) + _device(settings)
    if not found:
        found = _defense(settings) + _attack_options(settings)
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
