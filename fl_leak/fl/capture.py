"""Capture once, attack many times: save what the malicious server intercepted, replay on it.

A capture holds the server's view of a whole simulation: the weights it sent each round, each
reply's arrays and metrics (or the client's error), and its own evaluations of the global model.
The oracle's ground truth (each attacked batch) is kept in separate files, read only to score.
Everything is plain tensors in safetensors files and JSON: loading a capture runs no code from it.

Captures live in ``capture.dir``, one directory per :func:`capture_key`: a hash of the whole
resolved configuration less the settings that act only after the updates are made
(``ATTACK_ONLY_KEYS``: attack, audit, ...), and of the package's code. Runs that differ only in
attack or audit settings share the key, so a sweep over attack options runs Flower once per FL
setting and replays the rest (``fl_leak.fl.orchestrator.run``); any change to the code or to a
client-side setting makes a new capture.

Layout of ``<capture.dir>/<key>/``::

    capture.json                  the hashed settings, the updates in order, the server's rounds
    server/sent_<round>.safetensors   the weights sent in a round
    server/update_<i>.safetensors     reply i's arrays ("<record>/<name>")
    oracle/update_<i>.safetensors     reply i's attacked batch ("inputs", "labels")
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from time import perf_counter
from typing import Any

from flwr.app import ArrayRecord, MetricRecord, RecordDict
from safetensors.torch import load_file, save_file

from fl_leak.config import RunConfig, as_plain_dict
from fl_leak.data import DatasetInfo
from fl_leak.fl.leakage import UpdateAttacker
from fl_leak.fl.local_data import load_split
from fl_leak.fl.oracle import Oracle
from fl_leak.fl.sink import ResultSink
from fl_leak.fl.version import source_digest
from fl_leak.fl.version import tree_digest as tree_digest  # where it used to live
from fl_leak.models import model_name
from fl_leak.progress import progress

log = logging.getLogger(__name__)

FORMAT = 2
META_FILE = "capture.json"
SUFFIX = ".safetensors"
ROUND_KEYS = (  # the server's own per-round figures, carried into a replay's summary
    "test_accuracy",
    "test_loss",
    "clients_accuracy",
    "clients_loss",
    "clients_seconds",
    "aggregate_seconds",
)


ATTACK_ONLY_KEYS = (  # settings that act after the updates are made: never part of the key
    "attack",
    "audit",
    "capture",
    "device",
    "ray",
    "fl.client_cpus",
    "fl.round_timeout",
)


def capture_settings(settings: RunConfig) -> dict[str, Any]:
    """What a capture is keyed by: the whole resolved configuration less ``ATTACK_ONLY_KEYS``,
    and the package's code (:func:`source_digest`)."""
    plain = as_plain_dict(settings)
    for dotted in ATTACK_ONLY_KEYS:
        *parents, leaf = dotted.split(".")
        node = plain
        for parent in parents:
            node = node[parent]
        node.pop(leaf)
    return {"format": FORMAT, "source": source_digest(), "settings": plain}


def capture_key(settings: RunConfig) -> str:
    """``<model>-<hash>``: equal for runs whose updates are equal, whatever their attack."""
    text = json.dumps(capture_settings(settings), sort_keys=True)
    return f"{model_name(settings.model)}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


@dataclass(frozen=True)
class CapturedUpdate:
    """One reply of a capture: an update (``file`` names its tensors) or a client's error.

    ``aggregated_clients``: the update is the aggregate of that many clients (secure aggregation).
    """

    round: int
    client: int | None
    file: str | None = None
    metrics: dict[str, dict[str, Any]] | None = None
    error: str | None = None
    aggregated_clients: int | None = None


class CaptureWriter:
    """Saves a live run's intercepted updates into ``directory`` (see the module's layout)."""

    def __init__(self, directory: Path, settings: RunConfig) -> None:
        self.directory = directory
        self.settings = settings
        self.updates: list[CapturedUpdate] = []
        self._rounds_sent: set[int] = set()
        for part in ("server", "oracle"):
            (directory / part).mkdir(parents=True, exist_ok=True)

    def add_update(
        self,
        server_round: int,
        client: int | None,
        sent: ArrayRecord,
        reply: RecordDict,
        oracle: Oracle | None,
        aggregated_clients: int | None = None,
    ) -> None:
        """Save the round's sent weights (once), the reply's arrays and metrics, and the oracle."""
        if server_round not in self._rounds_sent:
            save_file(
                _tensors({"sent": sent}), _path(self.directory, "server", f"sent_{server_round}")
            )
            self._rounds_sent.add(server_round)
        name = f"update_{len(self.updates)}"
        save_file(_tensors(dict(reply.array_records)), _path(self.directory, "server", name))
        if oracle is not None:
            truth = {"inputs": oracle.inputs.contiguous(), "labels": oracle.labels.contiguous()}
            save_file(truth, _path(self.directory, "oracle", name))
        metrics = {key: dict(record) for key, record in reply.metric_records.items()}
        self.updates.append(
            CapturedUpdate(
                server_round, client, name, metrics, aggregated_clients=aggregated_clients
            )
        )

    def add_failure(self, server_round: int, client: int | None, reason: str) -> None:
        """Note a client that raised instead of replying."""
        self.updates.append(CapturedUpdate(server_round, client, error=reason))

    def attacker(self, settings: RunConfig, info: DatasetInfo, sink: ResultSink) -> UpdateAttacker:
        """An attacker for ``fl_leak.fl.simulate`` that saves every update before attacking it."""
        return CapturingAttacker(settings, info, sink, self)

    def close(self, summary: dict[str, Any]) -> None:
        """Write ``capture.json``, with the server's per-round figures from the run's summary."""
        rounds = [
            {key: entry[key] for key in ("round", *ROUND_KEYS) if key in entry}
            for entry in summary["rounds"]
        ]
        meta = {
            "settings": capture_settings(self.settings),
            "updates": [asdict(update) for update in self.updates],
            "rounds": rounds,
        }
        (self.directory / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")


class CapturingAttacker(UpdateAttacker):
    """An :class:`UpdateAttacker` that hands every update to a :class:`CaptureWriter` first."""

    def __init__(
        self, settings: RunConfig, info: DatasetInfo, sink: ResultSink, writer: CaptureWriter
    ) -> None:
        super().__init__(settings, info, sink)
        self.writer = writer

    def client_failed(self, server_round: int, client: int | None, reason: str) -> None:
        """Save, then record, a client that raised."""
        self.writer.add_failure(server_round, client, reason)
        super().client_failed(server_round, client, reason)

    def attack_update(
        self,
        server_round: int,
        client: int | None,
        sent: ArrayRecord,
        reply: RecordDict,
        oracle: Oracle | None,
        aggregated_clients: int | None = None,
    ) -> None:
        """Save, then attack, one update."""
        self.writer.add_update(server_round, client, sent, reply, oracle, aggregated_clients)
        super().attack_update(server_round, client, sent, reply, oracle, aggregated_clients)


def _path(directory: Path, part: str, name: str) -> Path:
    return directory / part / f"{name}{SUFFIX}"


def _tensors(records: dict[str, ArrayRecord]) -> dict[str, Any]:
    return {
        f"{record}/{name}": tensor.contiguous()
        for record, arrays in records.items()
        for name, tensor in arrays.to_torch_state_dict().items()
    }


def _records(path: Path) -> dict[str, ArrayRecord]:
    grouped: dict[str, dict[str, Any]] = {}
    for key, tensor in load_file(path).items():
        record, name = key.split("/", 1)
        grouped.setdefault(record, {})[name] = tensor
    return {record: ArrayRecord(arrays) for record, arrays in grouped.items()}


class Capture:
    """A finished capture, read back: the server's view of every update, and the oracle apart."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        meta = json.loads((directory / META_FILE).read_text())
        self.updates = [CapturedUpdate(**update) for update in meta["updates"]]
        self.rounds: list[dict[str, Any]] = meta["rounds"]

    def sent(self, server_round: int) -> ArrayRecord:
        """The weights the server sent in ``server_round``."""
        return _records(_path(self.directory, "server", f"sent_{server_round}"))["sent"]

    def reply(self, update: CapturedUpdate) -> RecordDict:
        """The reply's records as the strategy saw them (oracle removed)."""
        assert update.file is not None and update.metrics is not None
        records: dict[str, Any] = dict(_records(_path(self.directory, "server", update.file)))
        records.update({key: MetricRecord(values) for key, values in update.metrics.items()})
        return RecordDict(records)

    def oracle(self, update: CapturedUpdate) -> Oracle | None:
        """The ground truth of ``update`` (scoring only), if the client sent any."""
        assert update.file is not None
        path = _path(self.directory, "oracle", update.file)
        if not path.exists():
            return None
        truth = load_file(path)
        return Oracle(inputs=truth["inputs"], labels=truth["labels"])


def replay(
    source: Capture, settings: RunConfig, output_dir: Path, **summary_extra: Any
) -> dict[str, Any]:
    """Attack every update of ``source`` with ``settings``' attack; write the usual outputs.

    Updates go through the same :class:`UpdateAttacker` as in a live run, in the same order, so
    the records equal those of a live run with the same settings.
    """
    start = perf_counter()
    info = load_split(settings.data, train=True).info
    sink = ResultSink(output_dir, settings, info.class_names)
    attacker = UpdateAttacker(settings, info, sink)
    rounds = {entry["round"]: entry for entry in source.rounds}
    initial = rounds.get(0, {})
    if "test_accuracy" in initial:
        sink.evaluation(0, initial["test_accuracy"], initial["test_loss"])
    for server_round in range(1, settings.fl.rounds + 1):
        attack_start = perf_counter()
        updates = [update for update in source.updates if update.round == server_round]
        sent = source.sent(server_round) if any(u.file for u in updates) else ArrayRecord()
        for update in progress(updates, f"round {server_round}: attacking updates"):
            if update.error is not None:
                attacker.client_failed(server_round, update.client, update.error)
                continue
            attacker.attack_update(
                server_round,
                update.client,
                sent=sent,
                reply=source.reply(update),
                oracle=source.oracle(update),
                aggregated_clients=update.aggregated_clients,
            )
        entry = rounds.get(server_round, {})
        timings = {
            key: entry[key] for key in ("clients_seconds", "aggregate_seconds") if key in entry
        }
        sink.end_round(server_round, attack_seconds=perf_counter() - attack_start, **timings)
        if "test_accuracy" in entry:
            sink.evaluation(server_round, entry["test_accuracy"], entry["test_loss"])
        if "clients_accuracy" in entry:
            sink.clients_evaluation(server_round, entry["clients_accuracy"], entry["clients_loss"])
    path = sink.write_summary(
        audit_index=attacker.audit_index(), run_seconds=perf_counter() - start, **summary_extra
    )
    return json.loads(path.read_text())
