"""Structured configuration of ``fl-leak``: the schema of ``conf/config.yaml`` (Hydra ConfigStore).

Every YAML file of the conf tree is merged into these dataclasses, so a misspelt key or a value of
the wrong type stops Hydra with the key's name. Values that need the registries (model, attack,
data set names) or several keys together are checked by :func:`fl_leak.fl.validation.check`.

>>> settings = compose(["fl.num_clients=3", "model=cnn2_c5"])
>>> settings.fl.num_clients, settings.model, settings.dtype
(3, 'cnn2_c5', <Dtype.float32: 'float32'>)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any, get_type_hints

import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from fl_leak.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parent / "conf"
CONFIG_NAME = "config"
SCHEMA_NAME = "fl_leak_schema"


class Dtype(Enum):
    """Floating-point type of the model's weights, on the clients and in the updates."""

    float32 = "float32"
    float64 = "float64"

    @property
    def torch(self) -> torch.dtype:
        """The matching ``torch.dtype``."""
        return getattr(torch, self.value)


class Partition(Enum):
    """How the training split is divided among clients (see ``fl_leak.data.partition_indices``)."""

    iid = "iid"
    dirichlet = "dirichlet"


class LocalData(Enum):
    """What a client trains on in one round.

    ``batch``: ``batch_size`` samples drawn from its partition, every local step on them (the
    setting of the attacks: FedSGD, and FedAvg with several steps on the same data).
    ``partition``: its whole partition, in mini-batches of ``batch_size``.
    """

    batch = "batch"
    partition = "partition"


@dataclass
class DataConfig:
    """Data set (``fl_leak.data.load_dataset``); ``root`` None means its default cache.

    ``factory``: a ``_target_`` mapping naming a Dataset factory of the user's own code
    (:mod:`fl_leak.data.target`); ``name`` is then only the data set's name in the records.
    """

    name: str = "embedded"
    root: str | None = None
    download: bool = False
    factory: Any = None


@dataclass
class AttackConfig:
    """Attack name (``fl_leak.list_attacks()``) and its keyword options."""

    name: str = "linear"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DefenseConfig:
    """Defense (``fl_leak.defenses.list_defenses()``) and its strength options.

    ``none`` sends the updates as they are; each ``conf/defense/<name>.yaml`` documents its
    options, checked by name before a run starts.
    """

    name: str = "none"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class FaultConfig:
    """Clients made to raise on purpose, to exercise failure handling (empty: none).

    A client whose partition is in ``clients`` raises in the rounds of ``rounds`` (every round
    when ``rounds`` is empty).
    """

    clients: list[int] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)


@dataclass
class FlConfig:
    """Federated-learning settings.

    ``local_steps`` 1 with ``local_data`` batch is FedSGD; more steps, or ``local_epochs`` > 0
    (passes over the local data, overriding ``local_steps``), is FedAvg. The server attacks the
    updates of the rounds in ``attack_rounds`` (every round when empty).
    """

    num_clients: int = 4
    rounds: int = 2
    batch_size: int = 1
    local_steps: int = 1
    local_epochs: int = 0
    local_data: LocalData = LocalData.batch
    lr: float = 0.01
    partition: Partition = Partition.iid
    alpha: float = 0.5
    fraction_train: float = 1.0
    fraction_evaluate: float = 0.0
    client_cpus: float = 1.0
    round_timeout: float = 600.0
    attack_rounds: list[int] = field(default_factory=list)
    fault: FaultConfig = field(default_factory=FaultConfig)


@dataclass
class RayConfig:
    """Where the simulation's clients run.

    ``address`` None starts a private Ray on this machine for the run; ``auto`` or ``<ip:port>``
    attaches to a running Ray cluster instead. ``loopback`` keeps Ray on 127.0.0.1 (a private
    Ray, or a head started with ``--node-ip-address=127.0.0.1``); set it false to attach to a
    cluster that spans machines.
    """

    address: str | None = None
    loopback: bool = True
    num_cpus: int | None = None


@dataclass
class AuditSettings:
    """The security audit recorded with every update (``fl_leak.audit``).

    ``max_dense`` is the audit's: exact ranks up to that size, a fast structural bound above
    (0 gives the bound everywhere, in milliseconds).
    """

    enabled: bool = True
    max_dense: int = 6000


class CaptureMode(Enum):
    """Whether a run saves what the malicious server intercepted, and replays saved captures.

    ``off``: attack live, save nothing. ``reuse``: replay the capture of these settings if the
    cache holds one, else run Flower, attack live and save the capture. ``replay``: replay only
    (an error when the cache holds no capture). ``auto``: ``reuse`` in a multirun, else ``off``.
    """

    off = "off"
    auto = "auto"
    reuse = "reuse"
    replay = "replay"


@dataclass
class CaptureConfig:
    """Captures of intercepted updates (``fl_leak.fl.capture``), shared by the jobs of a sweep.

    A capture is keyed by a hash of the settings that shape the updates (model, data, FL,
    defense, seed, dtype), so runs that differ only in attack or audit settings share it.
    """

    mode: CaptureMode = CaptureMode.auto
    dir: str = "~/.cache/fl_leak/captures"


@dataclass
class RunConfig:
    """One ``fl-leak`` experiment: a Flower simulation with a malicious server."""

    model: Any = "cnn2_c1"  # a registered name, or a _target_ mapping (fl_leak.models.target)
    data: DataConfig = field(default_factory=DataConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    defense: DefenseConfig = field(default_factory=DefenseConfig)
    fl: FlConfig = field(default_factory=FlConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    audit: AuditSettings = field(default_factory=AuditSettings)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    seed: int = 0
    device: str = "cpu"
    dtype: Dtype = Dtype.float32


def range_problems(settings: RunConfig) -> list[str]:
    """Every value of ``settings`` out of its range, named (no registry or data needed)."""
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


def attack_options_of(settings: RunConfig) -> dict[str, Any]:
    """The options the configured attack is called with: ``device`` and ``attack.options``."""
    return {"device": settings.device, **settings.attack.options}


def register_configs() -> None:
    """Store the schema in Hydra's ConfigStore (``conf/config.yaml`` extends it)."""
    ConfigStore.instance().store(name=SCHEMA_NAME, node=RunConfig)


def unknown_keys(cfg: Any, schema: type = RunConfig, prefix: str = "") -> list[str]:
    """Keys of ``cfg`` that ``schema`` does not have (added with ``+``), as dotted paths.

    Free-form mappings (``attack.options``, ``defense.options``) are checked by their owners.
    """
    hints = get_type_hints(schema)
    found = []
    for key in cfg:
        path = f"{prefix}{key}"
        if key not in hints:
            found.append(path)
        elif is_dataclass(hints[key]) and isinstance(cfg[key], DictConfig):
            found += unknown_keys(cfg[key], hints[key], f"{path}.")
    return found


def to_settings(cfg: Any) -> RunConfig:
    """The ``RunConfig`` of a composed (and schema-checked) Hydra config.

    Raises :class:`ConfigError` naming any key the schema does not know (Hydra lets ``+key=value``
    add one, which would otherwise be dropped in silence).
    """
    unknown = unknown_keys(cfg)
    if unknown:
        raise ConfigError(
            "unknown settings: "
            + ", ".join(unknown)
            + " (see fl-leak --help, or fl-leak --cfg job for every key and its value)"
        )
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(
            f"settings without a value: {', '.join(missing)} (set them, e.g. {missing[0]}=...)"
        )
    settings = OmegaConf.to_object(cfg)
    if not isinstance(settings, RunConfig):
        raise TypeError(f"expected a config built on {SCHEMA_NAME}, got {type(settings).__name__}")
    return settings


def compose(overrides: Sequence[str] = ()) -> RunConfig:
    """Compose ``conf/config.yaml`` with Hydra ``overrides``, outside a Hydra app."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return to_settings(hydra_compose(config_name=CONFIG_NAME, overrides=list(overrides)))


def as_plain_dict(settings: RunConfig) -> dict[str, Any]:
    """The settings as JSON-ready nested dicts (enums by value)."""
    container = OmegaConf.to_container(OmegaConf.structured(settings), enum_to_str=True)
    assert isinstance(container, dict)
    return {str(key): value for key, value in container.items()}
