"""Secure aggregation: the round on Flower's legacy path, where SecAgg+ runs.

Flower's SecAgg+ (``secaggplus_mod`` on the clients, ``SecAggPlusWorkflow`` on the server) works
only on the legacy path: ``NumPyClient``, ``DefaultWorkflow``, ``LegacyContext`` and a strategy of
``flwr.server.strategy``. Each client masks its quantised, sample-weighted weights; the server
unmasks only their sum and hands its strategy, in every client's ``FitRes``, the same aggregate:
the clients' weights averaged by sample count.

The malicious server keeps its logic of the Message-API path (:class:`UpdateAttacker`): it attacks
that aggregate as one update of a batch holding every aggregated client's batch. SecAgg+ leaves no
per-client channel, so the ground truth the score needs is recomputed on the server from the
settings (:func:`aggregate_oracle`), for scoring only, never given to the attack.
"""

from __future__ import annotations

import random
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, MetricRecord, RecordDict
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import (
    FitRes,
    NDArrays,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server import LegacyContext, ServerConfig
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, Key
from flwr.serverapp import Grid, ServerApp

from fl_leak.config import LocalData, RunConfig
from fl_leak.data import DatasetInfo
from fl_leak.defenses import build_defense
from fl_leak.defenses.secure_aggregation import SecAgg
from fl_leak.fl.client_app import (
    SettingsSource,
    local_evaluation,
    local_update,
    partition_of,
)
from fl_leak.fl.leakage import UpdateAttacker
from fl_leak.fl.local_data import load_split, partitions, round_plan, round_seed
from fl_leak.fl.oracle import Oracle
from fl_leak.fl.server_app import AttackerFactory, RunSource
from fl_leak.fl.sink import ResultSink
from fl_leak.fl.task import (
    ARRAYS_KEY,
    METRICS_KEY,
    NUM_EXAMPLES,
    evaluate,
    initial_model,
    model_with,
    samples,
)
from fl_leak.fl.values import record_int

ROUND_KEY = "server-round"
FitResults = list[tuple[ClientProxy, FitRes]]
Failures = list[tuple[ClientProxy, FitRes] | BaseException]


def parameter_names(settings: RunConfig, info: DatasetInfo) -> list[str]:
    """The names of the model's weights, in the order of the legacy path's arrays."""
    return list(initial_model(settings, info).state_dict())


def to_record(names: list[str], arrays: NDArrays) -> ArrayRecord:
    """Legacy arrays (in ``names``' order) as an ``ArrayRecord`` of named tensors."""
    if len(names) != len(arrays):
        raise ValueError(f"expected {len(names)} arrays, got {len(arrays)}")
    return ArrayRecord(
        {name: torch.from_numpy(np.array(array)) for name, array in zip(names, arrays, strict=True)}
    )


def to_ndarrays(state: dict[str, torch.Tensor]) -> NDArrays:
    """Named tensors as legacy arrays, in the state's order."""
    return [tensor.detach().cpu().numpy() for tensor in state.values()]


def workflow_shares(defense: SecAgg, num_clients: int) -> tuple[int | float, int | float]:
    """``num_shares`` and ``reconstruction_threshold`` for ``SecAggPlusWorkflow``, capped to
    ``num_clients``.

    Flower reads an integer as a count (``num_shares`` at least 3, the threshold below it) and a
    float as a fraction: a count that reaches every client (or every share) is passed as 1.0.
    """
    shares = min(defense.num_shares, num_clients)
    threshold = min(defense.reconstruction_threshold, shares)
    return (
        1.0 if shares == num_clients else shares,
        1.0 if threshold == shares else threshold,
    )


def max_weight(settings: RunConfig) -> int:
    """The largest sample count a client reports (SecAgg+ scales each client's weights by
    ``count / max_weight`` before quantising them: the largest keeps the full precision)."""
    if settings.fl.local_data is LocalData.batch:
        return settings.fl.batch_size
    return max(len(part) for part in partitions(settings))


def aggregate_oracle(settings: RunConfig, server_round: int, clients: list[int]) -> Oracle:
    """The ground truth of an aggregate: every client's round target, in ``clients``' order.

    Recomputed on the server from the settings (the clients' round plans are seeded), since
    SecAgg+ leaves no per-client channel. For scoring only: never given to the attack.
    """
    dataset = load_split(settings.data, train=True)
    batches = [
        samples(dataset, round_plan(settings, client, server_round).target, settings.dtype.torch)
        for client in clients
    ]
    return Oracle(
        inputs=torch.cat([inputs for inputs, _ in batches]),
        labels=torch.cat([labels for _, labels in batches]),
    )


class SecAggClient(NumPyClient):
    """An honest client on the legacy path: the same training as the Message-API client."""

    def __init__(self, settings: RunConfig, partition_id: int, context: Context) -> None:
        self.settings = settings
        self.partition_id = partition_id
        self.node_context = context
        self.info = load_split(settings.data, train=True).info
        self.names = parameter_names(settings, self.info)

    def fit(
        self, parameters: NDArrays, config: dict[str, Scalar]
    ) -> tuple[NDArrays, int, dict[str, Scalar]]:
        """Train from ``parameters``; reply with the new weights, the sample count, the metrics.

        ``secaggplus_mod`` then quantises and masks the weights before anything leaves.
        """
        server_round = int(config[ROUND_KEY])
        # SecAgg+ rounds stochastically with NumPy's global generator: seed it per round and client
        np.random.seed(round_seed(self.settings.seed + 2, server_round, self.partition_id) % 2**32)
        update = local_update(
            self.settings,
            self.partition_id,
            server_round,
            to_record(self.names, parameters),
            self.node_context,
        )
        metrics: dict[str, Scalar] = dict(update.metrics)
        return to_ndarrays(update.weights), int(metrics[NUM_EXAMPLES]), metrics

    def evaluate(
        self, parameters: NDArrays, config: dict[str, Scalar]
    ) -> tuple[float, int, dict[str, Scalar]]:
        """Loss, sample count and accuracy of ``parameters`` on this client's partition."""
        accuracy, loss, count = local_evaluation(
            self.settings, self.partition_id, to_record(self.names, parameters)
        )
        return loss, count, {"accuracy": accuracy}


def make_secagg_client_app(settings_of: SettingsSource) -> ClientApp:
    """The legacy ClientApp, with ``secaggplus_mod`` (it acts on train messages only)."""

    def client_fn(context: Context) -> Any:
        settings = settings_of(context)
        return SecAggClient(settings, partition_of(context, settings), context).to_client()

    return ClientApp(client_fn=client_fn, mods=[secaggplus_mod])


def _weighted_accuracy(metrics: list[tuple[int, dict[str, Scalar]]]) -> dict[str, Scalar]:
    total = sum(count for count, _ in metrics)
    return {"accuracy": sum(count * float(m["accuracy"]) for count, m in metrics) / total}


class SecAggFedAvg(FedAvg):
    """Flower's legacy FedAvg whose ``aggregate_fit`` attacks the aggregate SecAgg+ unmasked.

    Flower passes ``aggregate_fit`` one result per client, each holding the same unmasked
    aggregate as its parameters (and the client's own sample count and metrics, which SecAgg+
    leaves in clear); :func:`single_aggregate` checks that they are one aggregate.
    """

    def __init__(
        self,
        attacker: UpdateAttacker,
        names: list[str],
        dtype: torch.dtype,
        **fedavg_options: Any,
    ) -> None:
        super().__init__(**fedavg_options)
        self.attacker = attacker
        self.names = names
        self.dtype = dtype
        self.aggregated_rounds: set[int] = set()
        self._sent = ArrayRecord()
        self._round_start = 0.0

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager: Any) -> Any:
        """Keep the weights sent this round (the attack's model), then configure as FedAvg."""
        self._sent = to_record(self.names, parameters_to_ndarrays(parameters))
        instructions = super().configure_fit(server_round, parameters, client_manager)
        self._round_start = perf_counter()
        return instructions

    def aggregate_fit(
        self, server_round: int, results: FitResults, failures: Failures
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Attack the one aggregate every result carries; it becomes the new global model."""
        clients_seconds = perf_counter() - self._round_start
        self.aggregated_rounds.add(server_round)
        start = perf_counter()
        settings = self.attacker.settings
        aggregate: NDArrays | None = None
        try:
            aggregate = single_aggregate(results)
        except ValueError as error:
            self.attacker.client_failed(server_round, None, str(error))
        if aggregate is not None and self.attacker.attacks(server_round):
            count = len(results)
            clients = list(range(settings.fl.num_clients))
            oracle = None
            if count == len(clients):
                oracle = aggregate_oracle(settings, server_round, clients)
            examples = [fitres.num_examples for _, fitres in results]
            reply = RecordDict(
                {
                    ARRAYS_KEY: to_record(self.names, aggregate),
                    METRICS_KEY: MetricRecord({NUM_EXAMPLES: round(float(np.mean(examples)))}),
                }
            )
            self.attacker.attack_update(
                server_round, None, self._sent, reply, oracle, aggregated_clients=count
            )
        for failure in failures:
            self.attacker.client_failed(server_round, None, f"SecAgg+ failure: {failure}")
        attack_seconds = perf_counter() - start
        start = perf_counter()
        parameters = None
        if aggregate is not None:  # the global model in the model's dtype
            weights = [torch.from_numpy(np.asarray(a)).to(self.dtype).numpy() for a in aggregate]
            parameters = ndarrays_to_parameters(weights)
        self.attacker.sink.end_round(
            server_round,
            clients_seconds=clients_seconds,
            attack_seconds=attack_seconds,
            aggregate_seconds=perf_counter() - start,
        )
        return parameters, {}


def single_aggregate(results: FitResults) -> NDArrays:
    """The aggregate all ``results`` carry; ``ValueError`` if none, or if they differ."""
    if not results:
        raise ValueError("SecAgg+ returned no aggregate")
    arrays = [parameters_to_ndarrays(fitres.parameters) for _, fitres in results]
    first = arrays[0]
    for other in arrays[1:]:
        if len(other) != len(first) or any(
            not np.array_equal(a, b) for a, b in zip(first, other, strict=True)
        ):
            raise ValueError("the strategy received different weights, not one aggregate")
    return first


def serve_secagg(
    grid: Grid,
    context: Context,
    settings: RunConfig,
    output_dir: Path,
    attacker_factory: AttackerFactory = UpdateAttacker,
    **summary_extra: Any,
) -> Path:
    """:func:`fl_leak.fl.server_app.serve` on the legacy path, under SecAgg+.

    The same outputs: the attack's records, the global model's held-out accuracy before the first
    round and after each, the clients' evaluation with ``fl.fraction_evaluate`` > 0.
    """
    random.seed(settings.seed)  # Flower samples nodes and SecAgg+ neighbours with Python's random
    np.random.seed(settings.seed)
    info = load_split(settings.data, train=True).info
    test_split = load_split(settings.data, train=False)
    sink = ResultSink(output_dir, settings, info.class_names)
    attacker = attacker_factory(settings, info, sink)
    fl = settings.fl
    defense = build_defense(settings.defense.name, settings.defense.options)
    assert isinstance(defense, SecAgg), "the legacy path runs defense=secagg"
    model = initial_model(settings, info)
    names = list(model.state_dict())

    def evaluate_global(
        server_round: int, arrays: NDArrays, _: dict[str, Scalar]
    ) -> tuple[float, dict[str, Scalar]]:
        accuracy, loss = evaluate(model_with(settings, info, to_record(names, arrays)), test_split)
        sink.evaluation(server_round, accuracy, loss)
        return loss, {"accuracy": accuracy}

    strategy = SecAggFedAvg(
        attacker,
        names,
        settings.dtype.torch,
        fraction_fit=fl.fraction_train,
        fraction_evaluate=fl.fraction_evaluate,
        min_fit_clients=fl.num_clients,
        min_evaluate_clients=1,
        min_available_clients=fl.num_clients,
        evaluate_fn=evaluate_global,
        on_fit_config_fn=lambda server_round: {ROUND_KEY: server_round},
        initial_parameters=ndarrays_to_parameters(to_ndarrays(model.state_dict())),
        evaluate_metrics_aggregation_fn=_weighted_accuracy,
    )
    num_shares, threshold = workflow_shares(defense, fl.num_clients)
    secure_fit = SecAggPlusWorkflow(
        num_shares=num_shares,
        reconstruction_threshold=threshold,
        max_weight=max_weight(settings),
        timeout=fl.round_timeout,
    )

    def fit_round(grid: Grid, legacy: Context) -> None:
        configs = legacy.state.config_records[MAIN_CONFIGS_RECORD]
        server_round = record_int(configs, Key.CURRENT_ROUND)
        secure_fit(grid, legacy)
        if server_round not in strategy.aggregated_rounds:  # the protocol stopped before unmasking
            attacker.client_failed(server_round, None, "SecAgg+ halted: no aggregate")
            sink.end_round(server_round)

    legacy = LegacyContext(
        context=context,
        config=ServerConfig(num_rounds=fl.rounds, round_timeout=fl.round_timeout),
        strategy=strategy,
    )
    start = perf_counter()
    DefaultWorkflow(fit_workflow=fit_round)(grid, legacy)
    losses = dict(legacy.history.losses_distributed)
    for server_round, accuracy in legacy.history.metrics_distributed.get("accuracy", []):
        sink.clients_evaluation(server_round, float(accuracy), float(losses[server_round]))
    return sink.write_summary(
        audit_index=attacker.audit_index(), run_seconds=perf_counter() - start, **summary_extra
    )


def make_secagg_server_app(
    run_of: RunSource, attacker_factory: AttackerFactory = UpdateAttacker, **summary_extra: Any
) -> ServerApp:
    """The legacy-path ServerApp; ``run_of(context)`` gives the settings and the output
    directory."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        settings, output_dir = run_of(context)
        serve_secagg(grid, context, settings, output_dir, attacker_factory, **summary_extra)

    return app
