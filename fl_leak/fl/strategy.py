"""The malicious server's strategy: Flower's FedAvg that attacks every reply before aggregating.

The work on a round's replies (name each client, take out the oracle, attack, record, aggregate in
partition order) is :class:`Interceptor`'s, shared with the wrapper of any strategy,
:class:`fl_leak.fl.malicious.MaliciousStrategy`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from time import perf_counter
from typing import Any, TypeVar

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fl_leak.fl.identity import ClientDirectory
from fl_leak.fl.leakage import Attacker
from fl_leak.fl.oracle import take_oracle
from fl_leak.progress import progress

log = logging.getLogger(__name__)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_MESSAGE = "Message: "
_PROCESS_ERROR = re.compile(r"<class '[\w.]+'>:<'(.*)'>", re.DOTALL)
Aggregate = TypeVar("Aggregate")


def client_error_message(reason: str | None) -> str:
    """The client's exception message out of a Flower error reason: a Ray traceback (the
    simulation) or ``<class 'Error'>:<'message'>`` (a SuperNode's ClientApp process)."""
    if not reason:
        return "the client failed and gave no reason"
    reason = _ANSI.sub("", reason).strip()
    if _MESSAGE in reason:
        return reason.rsplit(_MESSAGE, 1)[1].rstrip("'>").strip()
    process_error = _PROCESS_ERROR.fullmatch(reason)
    if process_error:
        return process_error.group(1)
    return reason


class Interceptor:
    """A malicious strategy's part in each round: it keeps the weights sent to every node, and
    before aggregation attacks every reply with an :class:`Attacker`.

    Each reply's identity and oracle records are taken out before the attack and before the
    strategy aggregates, so the strategy sees replies as they would be without fl-leak.
    """

    def __init__(self, attacker: Attacker) -> None:
        self.attacker = attacker
        self.directory = ClientDirectory()
        self._sent: dict[int, ArrayRecord] = {}
        self._round_start = 0.0
        self._told_of_ground_truth = False

    def sent(self, messages: Iterable[Message]) -> list[Message]:
        """Keep the weights each train message carries (the attack's model); return them."""
        messages = list(messages)
        self._sent = {}
        for message in messages:
            arrays = list(message.content.array_records.values())
            if len(arrays) == 1:
                self._sent[message.metadata.dst_node_id] = arrays[0]
        self._round_start = perf_counter()
        return messages

    def aggregate(
        self,
        server_round: int,
        replies: Iterable[Message],
        aggregate: Callable[[int, Iterable[Message]], Aggregate],
    ) -> Aggregate:
        """Attack every reply (of the rounds the attacker attacks), record failures, then
        ``aggregate(server_round, replies)``, all in partition order."""
        replies = list(replies)
        clients_seconds = perf_counter() - self._round_start
        start = perf_counter()
        self.directory.learn(replies)
        replies.sort(key=self.directory.order)  # arrival order varies; the aggregate's must not
        attacked = self.attacker.attacks(server_round)
        described = f"round {server_round}: attacking updates" if attacked else "round"
        for reply in progress(replies, described):
            client = self.directory.client_of(reply)
            oracle = take_oracle(reply)
            if oracle is not None and not self._told_of_ground_truth:
                self._told_of_ground_truth = True
                log.info(
                    "clients send the images of their attacked batches (ground truth, for scoring "
                    "only) on the oracle channel: on real nodes, their training data; a node's "
                    "send-ground-truth=false stops it (docs/deployment.md)"
                )
            if not attacked:
                continue
            if reply.has_error():
                self.attacker.client_failed(
                    server_round, client, client_error_message(reply.error.reason)
                )
                continue
            sent = self._sent.get(reply.metadata.src_node_id)
            if sent is None:
                self.attacker.client_failed(
                    server_round, client, "it was sent no single ArrayRecord"
                )
                continue
            self.attacker.attack_update(
                server_round, client, sent=sent, reply=reply.content, oracle=oracle
            )
        attack_seconds = perf_counter() - start
        start = perf_counter()
        aggregated = aggregate(server_round, replies)
        self.attacker.sink.end_round(
            server_round,
            clients_seconds=clients_seconds,
            attack_seconds=attack_seconds,
            aggregate_seconds=perf_counter() - start,
        )
        return aggregated


class MaliciousFedAvg(FedAvg):
    """FedAvg whose ``aggregate_train`` first attacks each reply with an :class:`Attacker`.

    Every FedAvg option (``fraction_train``, ``min_available_nodes``, ...) works as in Flower.
    """

    def __init__(self, attacker: Attacker, **fedavg_options: Any) -> None:
        super().__init__(**fedavg_options)
        self.attacker = attacker
        self.interceptor = Interceptor(attacker)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Configure as FedAvg; keep the weights sent (the attack's model)."""
        return self.interceptor.sent(super().configure_train(server_round, arrays, config, grid))

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Attack every reply (of the rounds in ``fl.attack_rounds``), record failures, then
        aggregate as FedAvg, all in partition order."""
        return self.interceptor.aggregate(server_round, replies, super().aggregate_train)
