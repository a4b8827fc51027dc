"""The malicious server's work on one update: gradient estimate, attack, score, record.

Independent of any strategy class and of fl-leak's run configuration, so that every server-side
path shares it: a strategy hands :meth:`Attacker.attack_update` the weights it sent, the reply's
records (oracle removed) and the oracle it took out. The attack receives only :class:`ServerView`,
built from what a real server holds (:class:`AttackSettings`: the model, the clients' training
hyper-parameters); the oracle is read afterwards, to score. :class:`UpdateAttacker` is the
:class:`Attacker` of an fl-leak run, :class:`fl_leak.fl.malicious.MaliciousStrategy` that of a
Flower app of one's own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, TypeVar

import torch
from flwr.app import ArrayRecord, MetricRecord, RecordDict
from torch import Tensor, nn

import fl_leak
from fl_leak.attacks import Reconstruction, reconstruct
from fl_leak.attacks.fedavg.schedule import server_schedule, takes_schedule, with_schedule
from fl_leak.config import RunConfig
from fl_leak.data import DatasetInfo
from fl_leak.defenses import EPSILON_METRIC, build_defense
from fl_leak.errors import FlLeakError
from fl_leak.fl.gradients import gradient_estimate, relative_error
from fl_leak.fl.oracle import Oracle
from fl_leak.fl.shortfall import shortfall
from fl_leak.fl.sink import ResultSink, Shown
from fl_leak.fl.task import NUM_EXAMPLES, initial_model, mean_loss
from fl_leak.fl.values import record_float, record_int
from fl_leak.metrics import score_batch
from fl_leak.models import model_name
from fl_leak.records import LeakRecord
from fl_leak.schedule import step_count, trained_samples
from fl_leak.threads import torch_threads

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class AttackSettings:
    """What the malicious server knows of the clients' training, and the attack it runs.

    Everything :class:`Attacker` needs, without fl-leak's run configuration: a Flower app of its
    own fills it from its own model and hyper-parameters (see :mod:`fl_leak.fl.malicious`);
    :func:`attack_settings` fills it from an fl-leak run.

    Parameters
    ----------
    model : callable
        Builds the model the clients train, in the dtype they train in; its weights are replaced
        by those the server sent before each attack.
    input_shape : tuple of int
        Shape ``(C, H, W)`` of one input.
    lr : float
        The clients' learning rate (plain SGD).
    batch_size, local_steps, local_epochs : int
        The local training the server configured: ``local_steps`` steps on a batch of
        ``batch_size`` (1 step: FedSGD, where the update gives the gradient exactly), or with
        ``local_epochs`` > 0 that many passes over the ``num-examples`` samples a reply reports.
    attack : str
        One of ``fl_leak.list_attacks()`` (``linear``, ``hybrid``, ``ig``, ``dlg``), with its
        keyword ``attack_options``, on ``device``.
    attack_rounds : tuple of int
        The rounds whose updates are attacked; empty: every round.
    audit_max_dense : int or None
        ``max_dense`` of the :func:`fl_leak.audit` whose index every record carries (0: its fast
        structural bound); None: no audit.
    model_name : str
        The model's name in the records; empty: its class name.
    """

    model: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    lr: float
    batch_size: int = 1
    local_steps: int = 1
    local_epochs: int = 0
    attack: str = "linear"
    attack_options: Mapping[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    attack_rounds: tuple[int, ...] = ()
    audit_max_dense: int | None = 0
    model_name: str = ""


def attack_settings(settings: RunConfig, info: DatasetInfo) -> AttackSettings:
    """The :class:`AttackSettings` of an fl-leak run on the data set described by ``info``."""
    fl = settings.fl
    return AttackSettings(
        model=partial(initial_model, settings, info),
        input_shape=info.input_shape,
        lr=fl.lr,
        batch_size=fl.batch_size,
        local_steps=fl.local_steps,
        local_epochs=fl.local_epochs,
        attack=settings.attack.name,
        attack_options=dict(settings.attack.options),
        device=settings.device,
        attack_rounds=tuple(fl.attack_rounds),
        audit_max_dense=settings.audit.max_dense if settings.audit.enabled else None,
        model_name=model_name(settings.model),
    )


@dataclass(frozen=True)
class ServerView:
    """Everything the attack receives about one update: what a real server holds.

    The model at the round's start (the weights the server sent), the gradient estimated from the
    returned weights, and public knowledge: the input shape, the number of samples the attack
    reconstructs (the configured batch size; for a FedAvg attack every sample the client trained
    on, :func:`~fl_leak.schedule.trained_samples`), the local steps, and the
    ``schedule`` the server configured (``local_lr``, ``local_steps``, ``local_batch_size``,
    ``local_epochs``), passed to the attacks that declare it (:func:`reconstruct_view`).
    """

    model: nn.Module
    gradients: list[Tensor]
    input_shape: tuple[int, ...]
    batch_size: int
    steps: int
    schedule: Mapping[str, Any] = field(default_factory=dict)


def _single(records: Mapping[str, T], kind: str) -> T:
    if len(records) != 1:
        raise ValueError(f"expected one {kind} in the reply, found {len(records)}")
    return next(iter(records.values()))


def reply_metrics(reply: RecordDict) -> MetricRecord:
    """The reply's one MetricRecord (sample count, training loss, a defense's metrics)."""
    return _single(reply.metric_records, "MetricRecord")


def update_view(
    attack: AttackSettings, sent: ArrayRecord, reply: RecordDict, batch_size: int | None = None
) -> ServerView:
    """The attack's inputs for one update: the server's own knowledge and the reply's records.

    Reads the reply's one ArrayRecord (the returned weights) and the sample count of its one
    MetricRecord, nothing else. ``batch_size`` is the batch the attack reconstructs (default
    ``attack.batch_size``, or for a FedAvg attack every sample the client trained on; the
    aggregate of ``N`` clients under secure aggregation: ``N`` times the batch size).
    """
    returned = _single(reply.array_records, "ArrayRecord")
    num_examples = record_int(reply_metrics(reply), NUM_EXAMPLES)
    model = attack.model()
    model.load_state_dict(sent.to_torch_state_dict())
    steps = step_count(attack, num_examples)
    gradients = gradient_estimate(model, sent, returned, attack.lr, steps)
    if batch_size is None:
        batch_size = attacked_samples(attack, num_examples)
    return ServerView(
        model, gradients, tuple(attack.input_shape), batch_size, steps, server_schedule(attack)
    )


def attacked_samples(attack: AttackSettings, num_examples: int) -> int:
    """How many samples the attack reconstructs from one client's update: every sample the
    client trained on for a FedAvg attack (:func:`~fl_leak.attacks.fedavg.schedule.takes_schedule`),
    else the configured batch size."""
    if not takes_schedule(attack.attack):
        return attack.batch_size
    return trained_samples(num_examples, attack.batch_size, attack.local_steps, attack.local_epochs)


def _reconstruct(
    view: ServerView, attack: str, options: Mapping[str, Any], device: str
) -> Reconstruction:
    return reconstruct(
        view.model,
        view.gradients,
        input_shape=view.input_shape,
        batch_size=view.batch_size,
        labels=None,
        attack=attack,
        **with_schedule(attack, {"device": device, **options}, view.schedule),
    )


def reconstruct_view(attack: AttackSettings, view: ServerView) -> Reconstruction:
    """Run the attack on ``view``; labels are left for the attack to recover. A FedAvg attack
    also receives the schedule the server configured (``view.schedule``)."""
    return _reconstruct(view, attack.attack, attack.attack_options, attack.device)


def server_view(
    settings: RunConfig,
    info: DatasetInfo,
    sent: ArrayRecord,
    reply: RecordDict,
    batch_size: int | None = None,
) -> ServerView:
    """:func:`update_view` for an fl-leak run (default batch size ``fl.batch_size``)."""
    return update_view(attack_settings(settings, info), sent, reply, batch_size)


def run_attack(settings: RunConfig, view: ServerView) -> Reconstruction:
    """:func:`reconstruct_view` with the attack of an fl-leak run."""
    return _reconstruct(view, settings.attack.name, settings.attack.options, settings.device)


def label_accuracy(recovered: Tensor, true: Tensor) -> float:
    """Fraction of the true labels found among the recovered ones, as multisets (order-free)."""
    classes = int(max(int(recovered.max()), int(true.max()))) + 1
    common = torch.minimum(
        torch.bincount(recovered.long(), minlength=classes),
        torch.bincount(true.long(), minlength=classes),
    )
    return int(common.sum()) / len(true)


def first_step_gradient(view: ServerView, oracle: Oracle) -> list[Tensor]:
    """The true gradient of ``oracle``'s batch at the round's start: the client's first local
    step's when ``oracle`` holds that step's batch (oracle side: uses the true batch).

    Computed on one thread: float32 sums depend on how the work is split, and the value must not
    depend on the process (a sweep's parallel job, a replay of a capture).
    """
    parameters = list(view.model.parameters())
    with torch_threads(1):
        loss = mean_loss(view.model, oracle.inputs.to(parameters[0].dtype), oracle.labels)
        gradients = torch.autograd.grad(loss, parameters)
    return [gradient.detach() for gradient in gradients]


class Attacker:
    """Attacks every update it is given and records the outcome in a :class:`ResultSink`.

    ``attack`` says what the server knows and which attack it runs; ``template`` is a record of
    the run whose outcome fields are empty: every record copies it, with its round and client.
    """

    def __init__(self, attack: AttackSettings, sink: ResultSink, template: LeakRecord) -> None:
        self.attack = attack
        self.sink = sink
        self.template = template
        self._audits: dict[int, int | None] = {}

    def audit_index(self, batch_size: int | None = None) -> int | None:
        """``fl_leak.audit``'s index of the model at ``batch_size`` (default: the run's
        ``fl.batch_size``), each batch size audited once per run."""
        size = self.attack.batch_size if batch_size is None else batch_size
        if size not in self._audits:
            self._audits[size] = self._audit(size)
        return self._audits[size]

    def _audit(self, batch_size: int) -> int | None:
        attack = self.attack
        if attack.audit_max_dense is None:
            return None
        log.info(
            "auditing %s at batch size %d (once per batch size; audit.max_dense=0 is faster) ...",
            self.template.model,
            batch_size,
        )
        try:
            report = fl_leak.audit(
                attack.model(),
                attack.input_shape,
                batch_size,
                max_dense=attack.audit_max_dense,
                rtol=0,  # the index counts exact deficiencies; skip the numerical count
            )
        except Exception as error:  # the index annotates records: its failure must not end the run
            log.warning("no audit index for %s: %s", self.template.model, error)
            return None
        return int(report.index)

    def attacks(self, server_round: int) -> bool:
        """Whether the server attacks this round's updates (``attack_rounds``)."""
        rounds = self.attack.attack_rounds
        return not rounds or server_round in rounds

    def record(
        self, server_round: int, client: int | None, aggregated_clients: int | None = None
    ) -> LeakRecord:
        """An empty record of this run for one client (or an aggregate) and round; its audit
        index is set where the batch it describes is known."""
        return replace(
            self.template,
            round=server_round,
            client=client,
            aggregated_clients=aggregated_clients,
        )

    def client_failed(self, server_round: int, client: int | None, reason: str) -> None:
        """Record a client that raised instead of replying (audit index at the run's batch)."""
        record = self.record(server_round, client)
        record.audit_index = self.audit_index()
        self.sink.add(record.fail("client", reason))

    def attack_update(
        self,
        server_round: int,
        client: int | None,
        sent: ArrayRecord,
        reply: RecordDict,
        oracle: Oracle | None,
        aggregated_clients: int | None = None,
    ) -> None:
        """Estimate the gradient, attack it, score against ``oracle`` and record the outcome.

        ``oracle`` holds the samples the client trained on in the order of first use (the first
        step's batch first); the reconstruction is scored against as many of them as it holds
        (every one for a FedAvg attack, the first step's batch for the others).

        ``aggregated_clients``: the update is the aggregate (the clients' mean) of that many
        clients' updates (secure aggregation, ``client`` None), attacked as one batch of all their
        samples; None for one client's own update. Any exception on the way is recorded as a
        failed record; the run goes on.
        """
        first_batch = self.attack.batch_size * (aggregated_clients or 1)
        # the audit index is at the batch the attack reconstructs, known once the update is read
        record = self.record(server_round, client, aggregated_clients)
        try:
            if oracle is None:
                raise ValueError(
                    "the reply carries no ground truth (oracle record) to score against: the "
                    "client sends none (an fl-leak node with send-ground-truth=false)"
                )
            view = update_view(
                self.attack, sent, reply, None if aggregated_clients is None else first_batch
            )
            record.audit_index = self.audit_index(view.batch_size)
            if aggregated_clients and view.steps > 1 and takes_schedule(self.attack.attack):
                raise FlLeakError(
                    f"attack {self.attack.attack!r} models one client's local training; an "
                    "aggregate of several clients' multi-step updates is not one trajectory"
                )
            record.steps, record.samples = view.steps, view.batch_size
            metrics = reply_metrics(reply)
            record.epsilon = (
                record_float(metrics, EPSILON_METRIC) if EPSILON_METRIC in metrics else None
            )
            record.gradient_relative_error = relative_error(
                view.gradients, first_step_gradient(view, oracle.first(first_batch))
            )
            reconstruction = reconstruct_view(self.attack, view)
            shown = self._score(record, reconstruction, oracle.first(view.batch_size))
            record.shortfall = shortfall(record, reconstruction)
        except Exception as error:  # one failed attack must not end the run
            log.warning("round %d, client %s: attack failed: %s", server_round, client, error)
            if record.audit_index is None:
                record.audit_index = self.audit_index(first_batch)
            self.sink.add(record.fail("attack", f"{type(error).__name__}: {error}"))
            return
        self.sink.add(record, shown)

    @staticmethod
    def _score(record: LeakRecord, reconstruction: Reconstruction, oracle: Oracle) -> Shown:
        candidates = reconstruction.inputs.detach().double().clamp(0.0, 1.0)
        originals = oracle.inputs.double()
        scores = score_batch(originals, candidates)
        record.psnr, record.ssim, record.mse = scores.mean_psnr, scores.mean_ssim, scores.mean_mse
        record.label_accuracy = label_accuracy(reconstruction.labels, oracle.labels)
        record.labels_recovered = reconstruction.labels_recovered
        record.seconds = reconstruction.seconds
        matched = candidates[torch.from_numpy(scores.permutation)]
        return Shown(originals=originals, labels=oracle.labels, reconstructions=matched)


class UpdateAttacker(Attacker):
    """The :class:`Attacker` of an fl-leak run: its settings, on the data set ``info`` describes.

    Records carry the run's settings (:meth:`fl_leak.records.LeakRecord.of_run`) and the
    defense's strength.
    """

    def __init__(self, settings: RunConfig, info: DatasetInfo, sink: ResultSink) -> None:
        self.settings = settings
        self.info = info
        self.defense_options = build_defense(
            settings.defense.name, settings.defense.options
        ).describe()
        template = LeakRecord.of_run(settings, 0, None, None, self.defense_options)
        super().__init__(attack_settings(settings, info), sink, template)
