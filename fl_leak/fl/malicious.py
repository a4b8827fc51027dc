"""fl-leak's attack, scoring and records in a Flower app of one's own.

Wrap the app's strategy (any strategy of ``flwr.serverapp.strategy``) in :class:`MaliciousStrategy`
with the app's model and the clients' training hyper-parameters (:class:`AttackSettings`); in the
ClientApp, attach the batch the client trained on to its train reply with :func:`attach_oracle`.
Every round the wrapper attacks each reply before the strategy aggregates it, scores the
reconstruction against that ground truth and writes ``results.jsonl``, ``grid_round_<r>.png`` and,
when ``start`` returns, ``summary.json`` into its output directory (the records of fl-leak's own
runs, :mod:`fl_leak.records`; fields that describe fl-leak's simulations, such as ``partition``
or ``seed``, are null).

ServerApp::

    strategy = MaliciousStrategy(
        FedAvg(fraction_train=1.0),
        AttackSettings(model=Net, input_shape=(3, 32, 32), lr=0.1, batch_size=1),
        output_dir="leak-outputs",
    )
    strategy.start(grid=grid, initial_arrays=ArrayRecord(Net().state_dict()), num_rounds=3)

ClientApp, once the reply is built::

    attach_oracle(reply, images, labels, client=partition_id)

The attack sees only what the server holds (the weights it sent, the reply's weights and sample
count, the settings); the oracle record is taken out of the reply before anything reads it, and
the identity record that names the client with it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import MISSING, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy
from torch import Tensor

from fl_leak.fl.identity import IDENTITY_KEY, identity_record
from fl_leak.fl.leakage import Attacker, AttackSettings
from fl_leak.fl.oracle import ORACLE_KEY, oracle_record
from fl_leak.fl.sink import ResultSink
from fl_leak.fl.strategy import Interceptor
from fl_leak.records import LeakRecord

Reply = TypeVar("Reply", Message, RecordDict)


def attach_oracle(reply: Reply, inputs: Tensor, labels: Tensor, client: int | None = None) -> Reply:
    """Add the ground truth of a train reply, for scoring only, and name its client.

    Parameters
    ----------
    reply : Message or RecordDict
        The ClientApp's train reply (or its content), changed in place and returned.
    inputs, labels : Tensor
        The samples the client trained on in the round, in the order of first use (the batch of
        its first local step first; under FedSGD, that batch), as the model receives them: images
        ``(B, C, H, W)`` in [0, 1] (the scores assume that range) and their class indices
        ``(B,)``. A batch attack is scored against the first step's batch, a FedAvg attack
        (``fedavg_hybrid``, ``fedavg_unroll``) against all of them.
    client : int, optional
        The client's name in the records (its partition id); None leaves it unnamed.

    The batch travels to the server in a ``ConfigRecord`` named ``oracle``: raw training data.
    Across machines, use TLS (``flower-superlink --ssl-*``, ``flower-supernode
    --root-certificates``).
    """
    content = reply.content if isinstance(reply, Message) else reply
    content[ORACLE_KEY] = oracle_record(inputs, labels)
    if client is not None:
        content[IDENTITY_KEY] = identity_record(client)
    return reply


def _template(attack: AttackSettings, name: str, dtype: str) -> LeakRecord:
    """The record of every update, outcome fields empty; fl-leak's run settings null."""
    known: dict[str, Any] = {
        "round": 0,
        "client": None,
        "attack": attack.attack,
        "model": name,
        "batch_size": attack.batch_size,
        "local_steps": attack.local_steps,
        "local_epochs": attack.local_epochs,
        "lr": attack.lr,
        "dtype": dtype,
    }
    values: dict[str, Any] = {
        item.name: known.get(item.name) for item in fields(LeakRecord) if item.default is MISSING
    }
    return LeakRecord(**values)


class MaliciousStrategy(Strategy):
    """Any Message-API strategy, whose ``aggregate_train`` first attacks every reply.

    Every method delegates to ``strategy``, and so does every attribute this class does not have
    (``strategy.fraction_train`` reads as ``self.fraction_train``). ``configure_train`` keeps the
    weights each node is sent; ``aggregate_train`` names the clients, takes out the oracle and
    identity records, attacks and records each reply (in partition order), then hands the
    replies to ``strategy.aggregate_train``. ``start`` writes ``summary.json`` when it returns.

    Parameters
    ----------
    strategy : flwr.serverapp.strategy.Strategy
        The app's strategy (``FedAvg``, ``FedAdam``, ``FedProx``, a DP wrapper, ...).
    attack : AttackSettings
        The app's model and the clients' training, and the attack to run.
    output_dir : str or Path
        Where the records go (relative paths: from the ServerApp's working directory, under the
        Deployment Engine the SuperLink's).
    class_names : sequence of str
        Names of the labels, for the grids' titles.
    """

    def __init__(
        self,
        strategy: Strategy,
        attack: AttackSettings,
        output_dir: str | Path = "leak-outputs",
        class_names: Sequence[str] = (),
    ) -> None:
        model = attack.model()
        name = attack.model_name or type(model).__name__
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        config = {
            "strategy": type(strategy).__name__,
            **{item.name: getattr(attack, item.name) for item in fields(attack)},
            "model": name,
            "attack_options": dict(attack.attack_options),
            "dtype": dtype,
        }
        self.strategy = strategy
        self.sink = ResultSink(Path(output_dir), None, class_names, config=config)
        self.attacker = Attacker(attack, self.sink, _template(attack, name, dtype))
        self.interceptor = Interceptor(self.attacker)

    def __getattr__(self, name: str) -> Any:
        if name == "strategy":  # not set yet: no delegation
            raise AttributeError(name)
        return getattr(self.strategy, name)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """The strategy's train messages; the weights each carries are kept for the attack."""
        messages = self.strategy.configure_train(server_round, arrays, config, grid)
        return self.interceptor.sent(messages)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Attack and record every reply, then aggregate them with the strategy."""
        return self.interceptor.aggregate(server_round, replies, self.strategy.aggregate_train)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """The strategy's."""
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """The strategy's."""
        return self.strategy.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        """The strategy's."""
        self.strategy.summary()

    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
    ) -> Result:
        """Flower's ``Strategy.start``, then ``summary.json`` (also when a round raises)."""
        self.sink.total_rounds = num_rounds
        self.attacker.template = replace(self.attacker.template, rounds=num_rounds)
        try:
            return super().start(
                grid,
                initial_arrays,
                num_rounds,
                timeout,
                train_config,
                evaluate_config,
                evaluate_fn,
            )
        finally:
            self.sink.write_summary()
