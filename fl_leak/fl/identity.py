"""Which partition each Flower node holds, asked once per node with a query message.

Node ids are random per run and an error reply carries nothing but the node id, so the server
asks every node it has not heard of for its partition id (a client's name in the records).
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fl_leak.fl.values import config_record, record_int

IDENTITY_KEY = "identity"
PARTITION_KEY = "partition-id"


def identity_reply(query: Message, partition_id: int) -> Message:
    """A client's answer to the server's query."""
    content = RecordDict({IDENTITY_KEY: ConfigRecord({PARTITION_KEY: partition_id})})
    return Message(content=content, reply_to=query)


class ClientDirectory:
    """Node id -> partition id, filled on demand."""

    def __init__(self, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self._partitions: dict[int, int] = {}

    def partitions(self, grid: Grid, node_ids: Iterable[int]) -> dict[int, int]:
        """The partition of every known node, after asking those of ``node_ids`` not yet known."""
        unknown = sorted(set(node_ids) - set(self._partitions))
        if unknown:
            queries = [
                Message(
                    content=RecordDict({IDENTITY_KEY: ConfigRecord()}),
                    message_type=MessageType.QUERY,
                    dst_node_id=node_id,
                )
                for node_id in unknown
            ]
            for reply in grid.send_and_receive(queries, timeout=self.timeout):
                if not reply.has_error():
                    identity = config_record(reply.content, IDENTITY_KEY)
                    self._partitions[reply.metadata.src_node_id] = record_int(
                        identity, PARTITION_KEY
                    )
        return dict(self._partitions)
