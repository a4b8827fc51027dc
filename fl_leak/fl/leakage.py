"""The malicious server's work on one update: gradient estimate, attack, score, record.

Independent of any strategy class, so that every server-side path shares it: a strategy hands
:meth:`UpdateAttacker.attack_update` the weights it sent, the reply's records (oracle removed) and
the oracle it took out. The attack receives only :class:`ServerView`, built from what a real server
holds; the oracle is read afterwards, to score.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TypeVar

import torch
from flwr.app import ArrayRecord, MetricRecord, RecordDict
from torch import Tensor, nn

import fl_leak
from fl_leak.attacks import Reconstruction, reconstruct
from fl_leak.config import RunConfig, attack_options_of
from fl_leak.data import DatasetInfo
from fl_leak.defenses import EPSILON_METRIC, build_defense
from fl_leak.errors import FlLeakError
from fl_leak.fl.gradients import gradient_estimate, relative_error
from fl_leak.fl.local_data import step_count
from fl_leak.fl.oracle import Oracle
from fl_leak.fl.shortfall import shortfall
from fl_leak.fl.sink import ResultSink, Shown
from fl_leak.fl.task import NUM_EXAMPLES, initial_model, mean_loss, model_with
from fl_leak.fl.values import record_float, record_int
from fl_leak.metrics import score_batch
from fl_leak.models import model_name
from fl_leak.records import LeakRecord
from fl_leak.threads import torch_threads

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class ServerView:
    """Everything the attack receives about one update: what a real server holds.

    The model at the round's start (the weights the server sent), the gradient estimated from the
    returned weights, and public knowledge: the input shape and the batch size it configured.
    """

    model: nn.Module
    gradients: list[Tensor]
    input_shape: tuple[int, ...]
    batch_size: int
    steps: int


def _single(records: Mapping[str, T], kind: str) -> T:
    if len(records) != 1:
        raise ValueError(f"expected one {kind} in the reply, found {len(records)}")
    return next(iter(records.values()))


def reply_metrics(reply: RecordDict) -> MetricRecord:
    """The reply's one MetricRecord (sample count, training loss, a defense's metrics)."""
    return _single(reply.metric_records, "MetricRecord")


def server_view(
    settings: RunConfig,
    info: DatasetInfo,
    sent: ArrayRecord,
    reply: RecordDict,
    batch_size: int | None = None,
) -> ServerView:
    """The attack's inputs for one update: the server's own knowledge and the reply's records.

    Reads the reply's one ArrayRecord (the returned weights) and the sample count of its one
    MetricRecord, nothing else. ``batch_size`` is the batch the attack reconstructs (default
    ``fl.batch_size``; the aggregate of ``N`` clients under secure aggregation: ``N`` times it).
    """
    returned = _single(reply.array_records, "ArrayRecord")
    num_examples = record_int(reply_metrics(reply), NUM_EXAMPLES)
    model = model_with(settings, info, sent)
    steps = step_count(settings.fl, num_examples)
    gradients = gradient_estimate(model, sent, returned, settings.fl.lr, steps)
    batch = settings.fl.batch_size if batch_size is None else batch_size
    return ServerView(model, gradients, info.input_shape, batch, steps)


def run_attack(settings: RunConfig, view: ServerView) -> Reconstruction:
    """Run the configured attack on ``view``; labels are left for the attack to recover."""
    return reconstruct(
        view.model,
        view.gradients,
        input_shape=view.input_shape,
        batch_size=view.batch_size,
        labels=None,
        attack=settings.attack.name,
        **attack_options_of(settings),
    )


def label_accuracy(recovered: Tensor, true: Tensor) -> float:
    """Fraction of the true labels found among the recovered ones, as multisets (order-free)."""
    classes = int(max(int(recovered.max()), int(true.max()))) + 1
    common = torch.minimum(
        torch.bincount(recovered.long(), minlength=classes),
        torch.bincount(true.long(), minlength=classes),
    )
    return int(common.sum()) / len(true)


def first_step_gradient(view: ServerView, oracle: Oracle) -> list[Tensor]:
    """The true gradient of the client's first local step (oracle side: uses the true batch).

    Computed on one thread: float32 sums depend on how the work is split, and the value must not
    depend on the process (a sweep's parallel job, a replay of a capture).
    """
    parameters = list(view.model.parameters())
    with torch_threads(1):
        loss = mean_loss(view.model, oracle.inputs.to(parameters[0].dtype), oracle.labels)
        gradients = torch.autograd.grad(loss, parameters)
    return [gradient.detach() for gradient in gradients]


class UpdateAttacker:
    """Attacks every update it is given and records the outcome in a :class:`ResultSink`."""

    def __init__(self, settings: RunConfig, info: DatasetInfo, sink: ResultSink) -> None:
        self.settings = settings
        self.info = info
        self.sink = sink
        self.defense_options = build_defense(
            settings.defense.name, settings.defense.options
        ).describe()

    @cached_property
    def audit_index(self) -> int | None:
        """``fl_leak.audit``'s index of the initial model at the run's batch size (once per run)."""
        audit_settings = self.settings.audit
        if not audit_settings.enabled:
            return None
        model = initial_model(self.settings, self.info)
        log.info(
            "auditing %s at batch size %d (once per run; audit.max_dense=0 is faster) ...",
            model_name(self.settings.model),
            self.settings.fl.batch_size,
        )
        try:
            report = fl_leak.audit(
                model,
                self.info.input_shape,
                self.settings.fl.batch_size,
                max_dense=audit_settings.max_dense,
                rtol=0,  # the index counts exact deficiencies; skip the numerical count
            )
        except FlLeakError as error:
            log.warning("no audit index for %s: %s", model_name(self.settings.model), error)
            return None
        return int(report.index)

    def attacks(self, server_round: int) -> bool:
        """Whether the server attacks this round's updates (``fl.attack_rounds``)."""
        rounds = self.settings.fl.attack_rounds
        return not rounds or server_round in rounds

    def record(
        self, server_round: int, client: int | None, aggregated_clients: int | None = None
    ) -> LeakRecord:
        """An empty record of this run for one client (or an aggregate) and round."""
        record = LeakRecord.of_run(
            self.settings, server_round, client, self.audit_index, self.defense_options
        )
        record.aggregated_clients = aggregated_clients
        return record

    def client_failed(self, server_round: int, client: int | None, reason: str) -> None:
        """Record a client that raised instead of replying."""
        self.sink.add(self.record(server_round, client).fail("client", reason))

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

        ``aggregated_clients``: the update is the aggregate (the clients' mean) of that many
        clients' updates (secure aggregation, ``client`` None), attacked as one batch of all their
        samples; None for one client's own update. Any exception on the way is recorded as a
        failed record; the run goes on.
        """
        record = self.record(server_round, client, aggregated_clients)
        try:
            if oracle is None:
                raise ValueError("the reply carries no oracle record to score against")
            batch_size = self.settings.fl.batch_size * (aggregated_clients or 1)
            view = server_view(self.settings, self.info, sent, reply, batch_size)
            record.steps = view.steps
            metrics = reply_metrics(reply)
            record.epsilon = (
                record_float(metrics, EPSILON_METRIC) if EPSILON_METRIC in metrics else None
            )
            record.gradient_relative_error = relative_error(
                view.gradients, first_step_gradient(view, oracle)
            )
            reconstruction = run_attack(self.settings, view)
            shown = self._score(record, reconstruction, oracle)
            record.shortfall = shortfall(self.settings, record, reconstruction)
        except Exception as error:  # one failed attack must not end the run
            log.warning("round %d, client %s: attack failed: %s", server_round, client, error)
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
