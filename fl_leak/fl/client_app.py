"""The honest clients: each trains on its data and replies with its new weights.

The reply holds the weights (``arrays``), the sample count (``metrics``), the client's partition
id (the ``identity`` record, :mod:`fl_leak.fl.identity`) and, for scoring only, the samples it
trained on in the round, the first step's batch first (the ``oracle`` record,
:mod:`fl_leak.fl.oracle`; sent unless the node's ``send-ground-truth`` says otherwise,
:mod:`fl_leak.fl.node_data`). A client first checks that the server runs the same fl-leak
(:mod:`fl_leak.fl.version`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from torch import Tensor

from fl_leak.config import RunConfig
from fl_leak.data import ImageDataset
from fl_leak.defenses import LocalPool, build_defense
from fl_leak.fl.identity import IDENTITY_KEY, identity_record
from fl_leak.fl.local_data import round_plan, round_seed
from fl_leak.fl.node_data import NodeData, node_data, sends_ground_truth
from fl_leak.fl.oracle import ORACLE_KEY, oracle_record
from fl_leak.fl.task import (
    ARRAYS_KEY,
    METRICS_KEY,
    NUM_EXAMPLES,
    arrays_of,
    evaluate,
    model_with,
    samples,
    sgd_steps,
)
from fl_leak.fl.values import array_record, config_record, record_int
from fl_leak.fl.version import check_version
from fl_leak.threads import torch_threads

log = logging.getLogger(__name__)
CONFIG_KEY = "config"

SettingsSource = Callable[[Context], RunConfig]


class InjectedFaultError(RuntimeError):
    """Raised by a client that ``fl.fault`` tells to fail."""


def partition_of(context: Context, settings: RunConfig) -> int:
    """This node's partition id, after checking the federation matches ``fl.num_clients``."""
    count = int(context.node_config["num-partitions"])
    if count != settings.fl.num_clients:
        raise ValueError(
            f"the federation has {count} nodes but fl.num_clients={settings.fl.num_clients}"
        )
    return int(context.node_config["partition-id"])


STEPS_STATE = "local-steps"


def local_pool(
    settings: RunConfig, data: NodeData, partition_id: int, server_round: int
) -> LocalPool:
    """The client's data in [0, 1], with a generator for its defense's randomness."""
    dataset = data.dataset
    images, labels = samples(dataset, torch.from_numpy(data.indices), settings.dtype.torch)
    # a stream of its own: the round's batches use round_seed(...) itself
    seed = round_seed(settings.seed + 1, server_round, partition_id)
    generator = torch.Generator().manual_seed(seed)
    return LocalPool(images, labels, dataset.info.num_classes, generator)


def _steps_before(context: Context) -> int:
    """Local steps this client took in earlier rounds (kept in the node's state)."""
    if STEPS_STATE not in context.state:
        return 0
    return record_int(context.state.metric_records[STEPS_STATE], "steps")


@dataclass(frozen=True)
class LocalUpdate:
    """A client's work in one round: the weights it replies with, its metrics (sample count,
    training loss, the defense's own), and the samples it trained on, in the order of first use
    (the first step's batch first; for scoring only)."""

    weights: dict[str, Tensor]
    metrics: dict[str, float]
    trained: tuple[Tensor, Tensor]


def local_update(
    settings: RunConfig,
    partition_id: int,
    server_round: int,
    sent: ArrayRecord,
    context: Context,
    data: NodeData | None = None,
) -> LocalUpdate:
    """Train on this round's local batches, from the weights ``sent``, under the run's defense.

    Every server-side path (the Message API's, SecAgg+'s legacy one) trains its clients here.
    ``data``: the node's training data (default: its partition of the run's data set). Training
    runs on one torch thread, so that an update does not depend on the machine's core count
    (a simulation's and a deployment's clients reply with the same weights).
    """
    fault = settings.fl.fault
    if partition_id in fault.clients and (not fault.rounds or server_round in fault.rounds):
        raise InjectedFaultError(
            f"injected failure of client {partition_id} in round {server_round}"
        )
    defense = build_defense(settings.defense.name, settings.defense.options)
    if data is None:
        data = node_data(settings, partition_id, {}, {})
    dataset = data.dataset
    dtype = settings.dtype.torch
    model = model_with(settings, dataset.info, sent)
    plan = round_plan(settings, partition_id, server_round, data.indices)
    pool = local_pool(settings, data, partition_id, server_round)
    batches = defense.local_batches([samples(dataset, batch, dtype) for batch in plan.steps], pool)
    steps_before = _steps_before(context)
    with torch_threads(1):
        outcome = defense.local_training(
            model, batches, settings.fl.lr, sgd_steps, pool, steps_before
        )
    context.state[STEPS_STATE] = MetricRecord({"steps": steps_before + len(batches)})
    replied = defense.protect_update(sent.to_torch_state_dict(), model.state_dict(), pool.generator)
    metrics = {NUM_EXAMPLES: len(plan.samples), "train-loss": outcome.losses[0], **outcome.metrics}
    return LocalUpdate(replied, metrics, samples(dataset, plan.trained, dtype))


def train_reply(
    message: Message, settings: RunConfig, partition_id: int, context: Context
) -> Message:
    """Train on this round's local batches, from the weights in ``message``, under the run's
    defense; build the reply: weights, metrics, identity and (if the node sends it) the oracle."""
    config = config_record(message.content, CONFIG_KEY)
    check_version(config, partition_id)
    data = node_data(settings, partition_id, context.node_config, config)
    server_round = record_int(config, "server-round")
    update = local_update(
        settings,
        partition_id,
        server_round,
        array_record(message.content, ARRAYS_KEY),
        context,
        data,
    )
    content = RecordDict(
        {
            ARRAYS_KEY: arrays_of(update.weights),
            METRICS_KEY: MetricRecord({**update.metrics}),  # a dict of its own value type
            IDENTITY_KEY: identity_record(partition_id),
        }
    )
    if sends_ground_truth(context.node_config, data.own):
        if data.own:
            log.warning(
                "client %d sends the images it trained on to the server for scoring "
                "(send-ground-truth=true)",
                partition_id,
            )
        content[ORACLE_KEY] = oracle_record(*update.trained)
    return Message(content=content, reply_to=message)


def local_evaluation(
    settings: RunConfig, partition_id: int, arrays: ArrayRecord, data: NodeData | None = None
) -> tuple[float, float, int]:
    """Accuracy, loss and sample count of the weights ``arrays`` on this client's data
    (default: its partition of the run's data set)."""
    if data is None:
        data = node_data(settings, partition_id, {}, {})
    dataset, indices = data.dataset, data.indices
    local = ImageDataset(dataset.images[indices], dataset.labels[indices], dataset.info)
    accuracy, loss = evaluate(model_with(settings, dataset.info, arrays), local)
    return accuracy, loss, len(local)


def evaluate_reply(
    message: Message, settings: RunConfig, partition_id: int, context: Context
) -> Message:
    """Accuracy and loss of the global model on this client's data."""
    config = config_record(message.content, CONFIG_KEY)
    check_version(config, partition_id)
    data = node_data(settings, partition_id, context.node_config, config)
    accuracy, loss, count = local_evaluation(
        settings, partition_id, array_record(message.content, ARRAYS_KEY), data
    )
    metrics = MetricRecord({NUM_EXAMPLES: count, "accuracy": accuracy, "loss": loss})
    return Message(content=RecordDict({METRICS_KEY: metrics}), reply_to=message)


def make_client_app(settings_of: SettingsSource) -> ClientApp:
    """The ClientApp; ``settings_of(context)`` gives the run's settings inside each call."""
    app = ClientApp()

    @app.train()
    def train(message: Message, context: Context) -> Message:
        settings = settings_of(context)
        return train_reply(message, settings, partition_of(context, settings), context)

    @app.evaluate()
    def evaluate_handler(message: Message, context: Context) -> Message:
        settings = settings_of(context)
        return evaluate_reply(message, settings, partition_of(context, settings), context)

    return app
