"""fl-leak in a Flower app of one's own: ``examples/own-flower-app``, and the strategy wrapper."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp.strategy import FedAdam
from flwr.supercore.task_identity import TaskIdentity

from fl_leak.fl import AttackSettings, MaliciousStrategy
from tests.flwr_processes import BIN, REPO, flwr_run, processes_mentioning

APP = REPO / "examples" / "own-flower-app"
RUN_CONFIG = {"batch-size": 1, "local-steps": 1, "lr": 0.1}


@pytest.fixture
def ownapp(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The example's package, imported from its directory, in a ServerApp's task identity."""
    monkeypatch.syspath_prepend(str(APP))
    for name, value in (("_run_id", 1), ("_task_id", 1), ("_node_id", 0)):
        monkeypatch.setattr(TaskIdentity, name, value)
    import ownapp.client_app
    import ownapp.task

    yield ownapp
    for name in [name for name in sys.modules if name.split(".")[0] == "ownapp"]:
        del sys.modules[name]


class InProcessGrid:
    """Two nodes whose ClientApp runs in this process; the clients of ``fail``'s (node, round)
    pairs raise. Replies come back in reverse order (arrival order is not partition order)."""

    def __init__(self, client_app: ClientApp, fail: set[tuple[int, int]]) -> None:
        self.client_app = client_app
        self.partitions = {21: 1, 34: 0}  # node id -> partition id
        self.fail = fail
        self.server_round = 0

    def get_node_ids(self) -> list[int]:
        return list(self.partitions)

    def send_and_receive(self, messages: Iterable[Message], timeout: float) -> list[Message]:
        replies = []
        for message in messages:
            node = message.metadata.dst_node_id
            if message.metadata.message_type == "train":
                self.server_round = int(message.content["config"]["server-round"])
            if (node, self.server_round) in self.fail:
                error = Error(code=2, reason="ClientAppException occurred. Message: disk full")
                replies.append(Message(error, reply_to=message))
                continue
            context = Context(
                run_id=1,
                node_id=node,
                node_config={"partition-id": self.partitions[node], "num-partitions": 2},
                state=RecordDict(),
                run_config=dict(RUN_CONFIG),
            )
            replies.append(self.client_app(message, context))
        return replies[::-1]


def test_the_wrapper_attacks_the_updates_of_any_strategy(
    ownapp: ModuleType, tmp_path: Path
) -> None:
    handed: list[list[str]] = []

    class Inner(FedAdam):  # not FedAvg; keeps what the wrapper hands it
        def aggregate_train(
            self, server_round: int, replies: Iterable[Message]
        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
            replies = list(replies)
            handed.extend(sorted(reply.content) for reply in replies if not reply.has_error())
            return super().aggregate_train(server_round, replies)

    task = ownapp.task
    settings = AttackSettings(model=task.Net, input_shape=task.INPUT_SHAPE, lr=RUN_CONFIG["lr"])
    strategy = MaliciousStrategy(Inner(eta=0.01), settings, output_dir=tmp_path)
    grid = InProcessGrid(ownapp.client_app.app, fail={(21, 2)})

    result = strategy.start(
        grid=grid,  # type: ignore[arg-type]
        initial_arrays=ArrayRecord(task.Net().state_dict()),
        num_rounds=2,
        train_config=ConfigRecord({"lr": RUN_CONFIG["lr"]}),
    )

    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [(r["round"], r["client"], r["status"], r["stage"]) for r in records] == [
        (1, 0, "ok", None),
        (1, 1, "ok", None),
        (2, 0, "ok", None),
        (2, 1, "error", "client"),  # named by its reply of round 1
    ]
    assert all(r["psnr"] >= 60 and r["label_accuracy"] == 1 for r in records[:3])
    assert records[3]["error"] == "disk full"
    assert (records[0]["model"], records[0]["lr"], records[0]["rounds"]) == ("Net", 0.1, 2)
    assert records[0]["partition"] is None  # fl-leak's own run settings: not known here
    assert handed and all(keys == ["arrays", "metrics"] for keys in handed)
    assert strategy.eta == 0.01  # the inner strategy's attributes read through the wrapper
    assert result.arrays is not None
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["status"], summary["ok"], summary["errors"]) == ("partial", 3, 1)
    assert summary["config"]["strategy"] == "Inner"
    assert (tmp_path / "grid_round_1.png").exists()


@pytest.mark.slow  # about 30 s: CI runs this file after the default selection
def test_flwr_run_runs_the_own_flower_app_and_records_every_update(tmp_path: Path) -> None:
    home, output_dir = tmp_path / "flwr-home", tmp_path / "leak"
    command = [
        str(BIN / "flwr"),
        "run",
        str(APP),
        "--stream",
        "--federation-config",
        "num-supernodes=2",
        "--run-config",
        f"num-server-rounds=2 leak-output-dir='{output_dir}'",
    ]
    start = time.monotonic()
    result = flwr_run(command, home, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = (output_dir / "results.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [(r["round"], r["client"], r["status"]) for r in records] == [
        (1, 0, "ok"),
        (1, 1, "ok"),
        (2, 0, "ok"),
        (2, 1, "ok"),
    ]
    assert all(r["psnr"] >= 60 and r["model"] == "Net" for r in records), records
    assert json.loads((output_dir / "summary.json").read_text())["ok"] == 4
    assert processes_mentioning(str(home)) == []
    print(f"flwr run of examples/own-flower-app: {time.monotonic() - start:.0f} s")


def test_the_docs_show_every_line_the_example_marks_as_added() -> None:
    page = (REPO / "docs" / "own-flower-app.md").read_text()
    marked = [
        line.strip()
        for path in sorted((APP / "ownapp").glob("*.py"))
        for line in path.read_text().splitlines()
        if "# fl-leak" in line
    ]
    assert len(marked) == 4
    assert all(line in page for line in marked), marked
