"""The honest clients: each trains on its partition and replies with its new weights.

The reply holds the weights (``arrays``), the sample count (``metrics``) and, for scoring only,
the batch the attack targets (the ``oracle`` record, see :mod:`fl_leak.fl.oracle`).
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fl_leak.config import RunConfig
from fl_leak.data import ImageDataset
from fl_leak.fl.identity import identity_reply
from fl_leak.fl.local_data import load_split, partitions, round_plan
from fl_leak.fl.oracle import ORACLE_KEY, oracle_record
from fl_leak.fl.task import (
    ARRAYS_KEY,
    METRICS_KEY,
    NUM_EXAMPLES,
    evaluate,
    model_with,
    samples,
    sgd_steps,
    to_arrays,
)

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


def train_reply(message: Message, settings: RunConfig, partition_id: int) -> Message:
    """Train on this round's local batches, from the weights in ``message``; build the reply."""
    server_round = int(message.content["config"]["server-round"])
    fault = settings.fl.fault
    if partition_id in fault.clients and (not fault.rounds or server_round in fault.rounds):
        raise InjectedFaultError(
            f"injected failure of client {partition_id} in round {server_round}"
        )
    dataset = load_split(settings.data, train=True)
    dtype = settings.dtype.torch
    model = model_with(settings, dataset.info, message.content[ARRAYS_KEY])
    plan = round_plan(settings, partition_id, server_round)
    losses = sgd_steps(
        model, (samples(dataset, batch, dtype) for batch in plan.steps), settings.fl.lr
    )
    metrics = MetricRecord({NUM_EXAMPLES: len(plan.samples), "train-loss": losses[0]})
    content = RecordDict(
        {
            ARRAYS_KEY: to_arrays(model),
            METRICS_KEY: metrics,
            ORACLE_KEY: oracle_record(*samples(dataset, plan.target, dtype)),
        }
    )
    return Message(content=content, reply_to=message)


def evaluate_reply(message: Message, settings: RunConfig, partition_id: int) -> Message:
    """Accuracy and loss of the global model on this client's partition."""
    dataset = load_split(settings.data, train=True)
    indices = partitions(settings)[partition_id]
    local = ImageDataset(dataset.images[indices], dataset.labels[indices], dataset.info)
    model = model_with(settings, dataset.info, message.content[ARRAYS_KEY])
    accuracy, loss = evaluate(model, local)
    metrics = MetricRecord({NUM_EXAMPLES: len(local), "accuracy": accuracy, "loss": loss})
    return Message(content=RecordDict({METRICS_KEY: metrics}), reply_to=message)


def make_client_app(settings_of: SettingsSource) -> ClientApp:
    """The ClientApp; ``settings_of(context)`` gives the run's settings inside each call."""
    app = ClientApp()

    @app.train()
    def train(message: Message, context: Context) -> Message:
        settings = settings_of(context)
        return train_reply(message, settings, partition_of(context, settings))

    @app.evaluate()
    def evaluate_handler(message: Message, context: Context) -> Message:
        settings = settings_of(context)
        return evaluate_reply(message, settings, partition_of(context, settings))

    @app.query()
    def identify(message: Message, context: Context) -> Message:
        return identity_reply(message, partition_of(context, settings_of(context)))

    return app
