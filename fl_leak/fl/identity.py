"""Which client sent a reply: its partition id, carried in every train reply.

Node ids are random per run, so a client names itself in its reply, in a ``ConfigRecord`` named
``identity`` (``partition-id``: the client's name in the records). The server takes that record
out of each reply (:meth:`ClientDirectory.learn`) before its strategy reads the reply. An error
reply carries no content, only its node id: its client is the partition that node named in an
earlier reply, or unknown (``None``).

The identity rides in the reply rather than in a separate query: under Flower's Deployment Engine
every message starts a fresh ClientApp process on the node, whose imports alone can take tens of
seconds, so a query answered after a fixed timeout named no client.
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ConfigRecord, Message

from fl_leak.fl.values import config_record, record_int

IDENTITY_KEY = "identity"
PARTITION_KEY = "partition-id"


def identity_record(partition_id: int) -> ConfigRecord:
    """The record a client adds to its reply under ``IDENTITY_KEY``."""
    return ConfigRecord({PARTITION_KEY: int(partition_id)})


def take_identity(reply: Message) -> int | None:
    """Remove the identity record from ``reply`` (in place) and return its partition id.

    ``None`` when the reply carries none (an error reply, or a client that does not name itself).
    """
    if reply.has_error() or IDENTITY_KEY not in reply.content:
        return None
    partition = record_int(config_record(reply.content, IDENTITY_KEY), PARTITION_KEY)
    del reply.content[IDENTITY_KEY]
    return partition


class ClientDirectory:
    """Node id -> partition id, learnt from the replies' identity records."""

    def __init__(self) -> None:
        self._partitions: dict[int, int] = {}

    def learn(self, replies: Iterable[Message]) -> None:
        """Take the identity record out of every reply and remember its node's partition."""
        for reply in replies:
            partition = take_identity(reply)
            if partition is not None:
                self._partitions[reply.metadata.src_node_id] = partition

    def client_of(self, reply: Message) -> int | None:
        """The partition id of the node that sent ``reply``, if it ever named itself."""
        return self._partitions.get(reply.metadata.src_node_id)

    def order(self, reply: Message) -> tuple[int, int, int]:
        """A sort key: replies of known clients by partition id, then the others by node id."""
        client = self.client_of(reply)
        node = reply.metadata.src_node_id
        return (0, client, node) if client is not None else (1, 0, node)
