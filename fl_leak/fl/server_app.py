"""The malicious server: FedAvg over the clients, attacking every update on the way."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from fl_leak.config import FlConfig, RunConfig
from fl_leak.data import DatasetInfo
from fl_leak.defenses import build_defense
from fl_leak.fl.leakage import UpdateAttacker
from fl_leak.fl.local_data import load_split
from fl_leak.fl.node_data import data_config
from fl_leak.fl.sink import ResultSink
from fl_leak.fl.strategy import MaliciousFedAvg
from fl_leak.fl.task import evaluate, initial_model, model_with, to_arrays
from fl_leak.fl.values import record_float
from fl_leak.fl.version import version_config

RunSource = Callable[[Context], tuple[RunConfig, Path]]
AttackerFactory = Callable[[RunConfig, DatasetInfo, ResultSink], UpdateAttacker]


def sampled_clients(fl: FlConfig) -> int:
    """How many clients FedAvg samples per round (``fraction_train`` of them, at least one)."""
    return max(int(fl.num_clients * fl.fraction_train), 1)


def client_config(info: DatasetInfo) -> dict[str, Any]:
    """What every train and evaluate message tells the clients besides FedAvg's ``server-round``:
    the server's fl-leak (which they check, :mod:`fl_leak.fl.version`), and the shape and classes
    of the run's data set (for nodes that read their own images, :mod:`fl_leak.fl.node_data`)."""
    return {**version_config(), **data_config(info)}


def serve(
    grid: Grid,
    settings: RunConfig,
    output_dir: Path,
    attacker_factory: AttackerFactory = UpdateAttacker,
    **summary_extra: Any,
) -> Path:
    """Run ``settings.fl.rounds`` rounds on ``grid``; write the outputs; return summary.json's path.

    The global model is evaluated on the data set's held-out split before the first round and
    after every round, and by the clients on their partitions if ``fl.fraction_evaluate`` > 0.
    ``attacker_factory`` builds the object every update goes to (an ``UpdateAttacker``, or a
    subclass that also saves the updates, see :mod:`fl_leak.fl.capture`).
    """
    random.seed(settings.seed)  # Flower samples nodes with Python's random
    np.random.seed(settings.seed)  # Flower's DP wrappers draw their noise from NumPy's
    info = load_split(settings.data, train=True).info
    test_split = load_split(settings.data, train=False)
    sink = ResultSink(output_dir, settings, info.class_names)
    attacker = attacker_factory(settings, info, sink)
    fl = settings.fl
    malicious = MaliciousFedAvg(
        attacker,
        fraction_train=fl.fraction_train,
        fraction_evaluate=fl.fraction_evaluate,
        min_train_nodes=1,
        min_evaluate_nodes=1,
        min_available_nodes=fl.num_clients,
    )
    defense = build_defense(settings.defense.name, settings.defense.options)
    strategy = defense.wrap_strategy(malicious, sampled_clients(fl))

    def evaluate_global(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        accuracy, loss = evaluate(model_with(settings, info, arrays), test_split)
        sink.evaluation(server_round, accuracy, loss)
        return MetricRecord({"accuracy": accuracy, "loss": loss})

    start = perf_counter()
    result = strategy.start(
        grid=grid,
        initial_arrays=to_arrays(initial_model(settings, info)),
        num_rounds=fl.rounds,
        timeout=fl.round_timeout,
        train_config=ConfigRecord(client_config(info)),
        evaluate_config=ConfigRecord(client_config(info)),
        evaluate_fn=evaluate_global,
    )
    for server_round, metrics in result.evaluate_metrics_clientapp.items():
        accuracy, loss = record_float(metrics, "accuracy"), record_float(metrics, "loss")
        sink.clients_evaluation(server_round, accuracy, loss)
    return sink.write_summary(
        audit_index=attacker.audit_index(), run_seconds=perf_counter() - start, **summary_extra
    )


def make_server_app(
    run_of: RunSource, attacker_factory: AttackerFactory = UpdateAttacker, **summary_extra: Any
) -> ServerApp:
    """The ServerApp; ``run_of(context)`` gives the settings and the output directory."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        settings, output_dir = run_of(context)
        serve(grid, settings, output_dir, attacker_factory, **summary_extra)

    return app
