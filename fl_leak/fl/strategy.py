"""The malicious server's strategy: Flower's FedAvg that attacks every reply before aggregating."""

from __future__ import annotations

import re
from collections.abc import Iterable
from time import perf_counter
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fl_leak.fl.identity import ClientDirectory
from fl_leak.fl.leakage import UpdateAttacker
from fl_leak.fl.oracle import take_oracle
from fl_leak.progress import progress

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_MESSAGE = "Message: "


def client_error_message(reason: str | None) -> str:
    """The client's exception message out of a Flower error reason (a Ray traceback)."""
    if not reason:
        return "the client failed and gave no reason"
    reason = _ANSI.sub("", reason).strip()
    if _MESSAGE in reason:
        return reason.rsplit(_MESSAGE, 1)[1].rstrip("'>").strip()
    return reason


class MaliciousFedAvg(FedAvg):
    """FedAvg whose ``aggregate_train`` first attacks each reply with an :class:`UpdateAttacker`.

    Every FedAvg option (``fraction_train``, ``min_available_nodes``, ...) works as in Flower.
    Each reply's oracle record is taken out before the attack and before aggregation.
    """

    def __init__(self, attacker: UpdateAttacker, **fedavg_options: Any) -> None:
        super().__init__(**fedavg_options)
        self.attacker = attacker
        self.directory = ClientDirectory()
        self._sent = ArrayRecord()
        self._grid: Grid | None = None
        self._round_start = 0.0

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Keep the weights sent this round (the attack's model), then configure as FedAvg."""
        self._sent, self._grid = arrays, grid
        messages = super().configure_train(server_round, arrays, config, grid)
        self._round_start = perf_counter()
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Attack every reply (of the rounds in ``fl.attack_rounds``), record failures, then
        aggregate as FedAvg, all in partition order."""
        replies = list(replies)
        assert self._grid is not None, "configure_train runs before aggregate_train"
        partitions = self.directory.partitions(
            self._grid, [reply.metadata.src_node_id for reply in replies]
        )
        clients_seconds = perf_counter() - self._round_start
        start = perf_counter()

        def order(reply: Message) -> tuple[int, int]:
            node = reply.metadata.src_node_id
            return (partitions.get(node, len(partitions)), node)

        replies.sort(key=order)  # arrival order varies; the aggregate's rounding must not
        attacked = self.attacker.attacks(server_round)
        described = f"round {server_round}: attacking updates" if attacked else "round"
        for reply in progress(replies, described):
            client = partitions.get(reply.metadata.src_node_id)
            oracle = take_oracle(reply)
            if not attacked:
                continue
            if reply.has_error():
                self.attacker.client_failed(
                    server_round, client, client_error_message(reply.error.reason)
                )
                continue
            self.attacker.attack_update(
                server_round,
                client,
                sent=self._sent,
                reply=reply.content,
                oracle=oracle,
            )
        attack_seconds = perf_counter() - start
        start = perf_counter()
        aggregated = super().aggregate_train(server_round, replies)
        self.attacker.sink.end_round(
            server_round,
            clients_seconds=clients_seconds,
            attack_seconds=attack_seconds,
            aggregate_seconds=perf_counter() - start,
        )
        return aggregated
