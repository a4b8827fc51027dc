"""The Flower pieces without Ray: clients called in-process, the server's per-update work."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch
from flwr.app import ConfigRecord, Context, Message, MessageType, Metadata, RecordDict

import fl_leak
from fl_leak.config import RunConfig, compose
from fl_leak.fl import leakage
from fl_leak.fl.client_app import make_client_app
from fl_leak.fl.flwr_apps import overrides
from fl_leak.fl.gradients import gradient_estimate, relative_error
from fl_leak.fl.leakage import UpdateAttacker, label_accuracy, run_attack, server_view
from fl_leak.fl.local_data import load_split, partitions, round_plan, step_count
from fl_leak.fl.oracle import ORACLE_KEY, Oracle, oracle_record, take_oracle
from fl_leak.fl.server_app import client_config
from fl_leak.fl.sink import ResultSink
from fl_leak.fl.strategy import client_error_message
from fl_leak.fl.task import initial_model, samples, to_arrays
from fl_leak.fl.version import VersionMismatchError
from fl_leak.metrics import psnr
from fl_leak.records import LeakRecord

CLIENTS = 4


def settings_with(*extra: str) -> RunConfig:
    return compose([f"fl.num_clients={CLIENTS}", "audit.max_dense=0", *extra])


def train_message(settings: RunConfig, server_round: int = 1, **config: object) -> Message:
    """A train message as the server sends it (``config`` overrides its config's values)."""
    info = load_split(settings.data, train=True).info
    content = RecordDict(
        {
            "arrays": to_arrays(initial_model(settings, info)),
            "config": ConfigRecord(
                {"server-round": server_round, **client_config(info), **config}  # type: ignore[dict-item]
            ),
        }
    )
    metadata = Metadata(
        run_id=1,
        message_id="train-1",
        src_node_id=1,
        dst_node_id=7,
        reply_to_message_id="",
        group_id="",
        created_at=time.time(),
        ttl=600.0,
        message_type=MessageType.TRAIN,
    )
    return Message(content=content, metadata=metadata)


def client_reply(
    settings: RunConfig,
    partition: int = 0,
    server_round: int = 1,
    kind: str = MessageType.TRAIN,
    node_config: dict[str, object] | None = None,
    message: Message | None = None,
) -> Message:
    """Run the real ClientApp in this process on a message of ``kind``; return its reply."""
    context = Context(
        run_id=1,
        node_id=7,
        node_config={"partition-id": partition, "num-partitions": CLIENTS, **(node_config or {})},  # type: ignore[dict-item]
        state=RecordDict(),
        run_config={},
    )
    message = message or train_message(settings, server_round)
    message.metadata.message_type = kind
    reply = make_client_app(lambda _: settings)(message, context)
    assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
    return reply


def view_of(settings: RunConfig, reply: Message) -> leakage.ServerView:
    info = load_split(settings.data, train=True).info
    sent = train_message(settings).content["arrays"]
    return server_view(settings, info, sent, reply.content)


# --- local data --------------------------------------------------------------------------------


def test_fedsgd_plan_is_one_batch_of_the_clients_own_samples() -> None:
    settings = settings_with("fl.batch_size=3")
    plan = round_plan(settings, partition_id=2, server_round=1)
    own = set(_partition(settings, 2))
    assert len(plan.steps) == 1
    assert len(plan.target) == 3
    assert set(plan.target.tolist()) <= own


def _partition(settings: RunConfig, partition: int) -> list[int]:
    return partitions(settings)[partition].tolist()


def test_plans_depend_on_seed_round_and_partition_only() -> None:
    settings = settings_with("fl.batch_size=2")
    first = round_plan(settings, 1, 1).target.tolist()
    assert round_plan(settings, 1, 1).target.tolist() == first
    assert round_plan(settings, 1, 2).target.tolist() != first
    assert round_plan(settings, 2, 1).target.tolist() != first


def test_local_steps_on_a_batch_repeat_that_batch() -> None:
    settings = settings_with("fl.batch_size=2", "fl.local_steps=5")
    plan = round_plan(settings, 0, 1)
    assert len(plan.steps) == 5
    assert all(sorted(step.tolist()) == sorted(plan.target.tolist()) for step in plan.steps)


def test_local_epochs_over_the_partition_use_every_sample_each_epoch() -> None:
    settings = settings_with("fl.batch_size=10", "fl.local_epochs=2", "fl.local_data=partition")
    plan = round_plan(settings, 0, 1)
    count = len(plan.samples)
    assert count == len(_partition(settings, 0)) == 96
    assert len(plan.steps) == step_count(settings.fl, count) == 2 * math.ceil(count / 10)
    first_epoch = torch.cat(plan.steps[: len(plan.steps) // 2])
    assert sorted(first_epoch.tolist()) == sorted(plan.samples.tolist())


def test_clients_evaluate_the_global_model_on_their_partition() -> None:
    settings = settings_with()
    metrics = client_reply(settings, partition=1, kind=MessageType.EVALUATE).content["metrics"]
    assert metrics["num-examples"] == len(_partition(settings, 1))
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["loss"] > 0


def test_every_train_reply_names_its_client() -> None:
    reply = client_reply(settings_with(), partition=3)
    assert reply.content["identity"]["partition-id"] == 3
    assert "oracle" in reply.content  # the run's data set: ground truth sent by default


def test_a_client_refuses_a_server_of_another_fl_leak_naming_both_versions() -> None:
    settings = settings_with()
    other = train_message(settings, **{"fl-leak-version": "0.0.9"})
    with pytest.raises(VersionMismatchError) as raised:
        client_reply(settings, partition=2, message=other)
    assert f"client 2 runs fl-leak {fl_leak.__version__} (source " in str(raised.value)
    assert "but the server runs fl-leak 0.0.9 (source " in str(raised.value)
    unversioned = train_message(settings)
    del unversioned.content["config"]["fl-leak-version"]
    with pytest.raises(VersionMismatchError, match="the server sent no fl-leak version"):
        client_reply(settings, message=unversioned)


def test_a_node_with_send_ground_truth_off_sends_no_oracle() -> None:
    reply = client_reply(settings_with(), node_config={"send-ground-truth": False})
    assert "oracle" not in reply.content and reply.content["identity"]["partition-id"] == 0


# --- update -> gradient --------------------------------------------------------------------------


def true_gradient(settings: RunConfig, oracle: Oracle) -> list[torch.Tensor]:
    info = load_split(settings.data, train=True).info
    model = initial_model(settings, info)
    loss = torch.nn.functional.cross_entropy(model(oracle.inputs), oracle.labels)
    return list(torch.autograd.grad(loss, list(model.parameters())))


@pytest.mark.parametrize(("dtype", "bound"), [("float64", 1e-13), ("float32", 1e-5)])
def test_fedsgd_update_gives_the_batch_gradient(dtype: str, bound: float) -> None:
    settings = settings_with(f"dtype={dtype}", "fl.batch_size=2")
    reply = client_reply(settings)
    oracle = take_oracle(reply)
    assert oracle is not None
    view = view_of(settings, reply)
    assert view.steps == 1
    assert relative_error(view.gradients, true_gradient(settings, oracle)) < bound


def test_fedavg_estimate_divides_by_lr_and_steps() -> None:
    settings = settings_with("dtype=float64")
    model = initial_model(settings, load_split(settings.data, True).info)
    sent = to_arrays(model)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter -= 2.0
    estimate = gradient_estimate(model, sent, to_arrays(model), lr=0.5, steps=4)
    assert all(torch.allclose(g, torch.ones_like(g)) for g in estimate)


# --- the oracle channel --------------------------------------------------------------------------


def test_the_attack_never_sees_the_oracle(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reply whose oracle is poisoned gives the same attack inputs and reconstruction."""
    settings = settings_with("fl.batch_size=1")
    honest, poisoned = client_reply(settings), client_reply(settings)
    fake = Oracle(inputs=torch.rand(1, 3, 32, 32), labels=torch.tensor([5]))
    poisoned.content[ORACLE_KEY] = oracle_record(fake.inputs, fake.labels)

    received: list[dict[str, object]] = []
    real_reconstruct = leakage.reconstruct

    def spy(*args: object, **kwargs: object):  # records exactly what reaches reconstruct
        received.append({"args": args, "kwargs": kwargs})
        return real_reconstruct(*args, **kwargs)

    monkeypatch.setattr(leakage, "reconstruct", spy)
    truth = take_oracle(honest)
    lie = take_oracle(poisoned)
    assert ORACLE_KEY not in honest.content and ORACLE_KEY not in poisoned.content
    assert lie is not None and torch.equal(lie.inputs, fake.inputs)

    results = [run_attack(settings, view_of(settings, reply)) for reply in (honest, poisoned)]

    assert torch.equal(results[0].inputs, results[1].inputs)
    assert torch.equal(results[0].labels, results[1].labels)
    for call in received:
        assert call["kwargs"]["labels"] is None
        tensors = [t for t in call["args"][1]] + [p.detach() for p in call["args"][0].parameters()]
        assert not any(t.shape == truth.inputs.shape for t in tensors)
    # the oracle is what scoring uses: the same reconstruction scores high against the truth only
    reconstruction = results[0].inputs.double().clamp(0, 1)
    assert float(psnr(truth.inputs.double(), reconstruction)) > 60
    assert float(psnr(fake.inputs.double(), reconstruction)) < 20


def test_oracle_round_trip_is_exact() -> None:
    inputs, labels = torch.rand(3, 3, 32, 32, dtype=torch.float64), torch.tensor([0, 4, 4])
    reply = client_reply(settings_with())
    reply.content[ORACLE_KEY] = oracle_record(inputs, labels)
    oracle = take_oracle(reply)
    assert oracle is not None
    assert torch.equal(oracle.inputs, inputs) and torch.equal(oracle.labels, labels)


def test_an_attack_that_cannot_run_is_recorded_not_raised(tmp_path: Path) -> None:
    settings = settings_with("+attack.options.no_such_option=1")
    reply = client_reply(settings)
    oracle = take_oracle(reply)
    info = load_split(settings.data, train=True).info
    sink = ResultSink(tmp_path, settings, info.class_names)
    attacker = UpdateAttacker(settings, info, sink)
    attacker.attack_update(1, 0, train_message(settings).content["arrays"], reply.content, oracle)
    [record] = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert (record["status"], record["stage"], record["client"]) == ("error", "attack", 0)
    assert "no_such_option" in record["error"] and record["psnr"] is None


# --- scoring and records -----------------------------------------------------------------------


def test_label_accuracy_compares_multisets() -> None:
    assert label_accuracy(torch.tensor([1, 1, 3]), torch.tensor([3, 1, 1])) == 1.0
    assert label_accuracy(torch.tensor([1, 2, 3]), torch.tensor([3, 1, 1])) == pytest.approx(2 / 3)
    assert label_accuracy(torch.tensor([0]), torch.tensor([7])) == 0.0


def test_records_are_strict_json() -> None:
    record = LeakRecord.of_run(
        settings_with(), server_round=1, client=0, audit_index=None, defense_options=""
    )
    record.psnr = math.inf
    line = json.dumps(record.as_json(), allow_nan=False)
    assert json.loads(line)["psnr"] is None


def test_client_errors_keep_the_exception_message() -> None:
    reason = (
        "<class 'ray.exceptions.RayTaskError(ClientAppException)'>:<'\x1b[36mray::Actor\x1b[39m "
        "Traceback ...\nflwr.clientapp.client_app.ClientAppException: \nException "
        "ClientAppException occurred. Message: injected failure of client 1 in round 2'>"
    )
    assert client_error_message(reason) == "injected failure of client 1 in round 2"
    assert client_error_message("plain text") == "plain text"
    deployed = "<class 'fl_leak.fl.version.VersionMismatchError'>:<'client 1 runs fl-leak 0.0.9'>"
    assert client_error_message(deployed) == "client 1 runs fl-leak 0.0.9"


def test_run_config_keys_become_overrides() -> None:
    assert overrides({"fl.num-clients": 3, "model": "cnn2_c5", "output-dir": "x", "x.y": True}) == [
        "fl.num_clients=3",
        "model=cnn2_c5",
        "x.y=true",
    ]


def test_samples_are_unit_range_images_in_the_model_dtype() -> None:
    dataset = load_split(settings_with().data, train=True)
    images, labels = samples(dataset, torch.tensor([0, 1]), torch.float64)
    assert images.dtype == torch.float64
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    assert labels.tolist() == dataset.labels[:2].tolist()


def test_a_run_audits_its_model_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every record of a run carries the index of one audit, at the run's model and batch size."""
    calls = []
    audit = fl_leak.audit

    def counted(model, input_shape, batch_size, **options):
        calls.append(batch_size)
        return audit(model, input_shape, batch_size, **options)

    monkeypatch.setattr(fl_leak, "audit", counted)
    settings = settings_with()
    info = load_split(settings.data, train=True).info
    sink = ResultSink(tmp_path, settings, info.class_names)
    attacker = UpdateAttacker(settings, info, sink)
    sent = train_message(settings).content["arrays"]
    for client in (0, 1):
        reply = client_reply(settings)
        attacker.attack_update(1, client, sent, reply.content, take_oracle(reply))
    attacker.client_failed(2, 0, "injected")
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    indices = {json.loads(line)["audit_index"] for line in lines}
    assert calls == [settings.fl.batch_size] and len(lines) == 3
    assert indices == {attacker.audit_index()} and attacker.audit_index() is not None
    assert calls == [settings.fl.batch_size]  # asked again: the run's audit, not a new one


def test_a_fedavg_record_carries_the_audit_at_every_trained_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A FedAvg attack reconstructs every sample the client trained on: its record's index is
    the audit at that many samples, not at the run's batch size."""
    calls = []
    audit = fl_leak.audit

    def counted(model, input_shape, batch_size, **options):
        calls.append(batch_size)
        return audit(model, input_shape, batch_size, **options)

    def stop(*args: object) -> None:
        raise RuntimeError("reconstruction skipped by the test")

    monkeypatch.setattr(fl_leak, "audit", counted)
    monkeypatch.setattr(leakage, "reconstruct_view", stop)
    settings = settings_with(
        "fl.local_data=partition", "fl.local_epochs=1", "fl.batch_size=32", "attack=fedavg_hybrid"
    )
    info = load_split(settings.data, train=True).info
    sink = ResultSink(tmp_path, settings, info.class_names)
    attacker = UpdateAttacker(settings, info, sink)
    reply = client_reply(settings)
    oracle = take_oracle(reply)
    assert oracle is not None
    trained = oracle.labels.numel()
    assert trained > settings.fl.batch_size
    attacker.attack_update(1, 0, train_message(settings).content["arrays"], reply.content, oracle)
    (record,) = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert record["status"] != "ok" and "skipped by the test" in record["error"]
    assert calls == [trained]
    assert record["audit_index"] == attacker.audit_index(trained)
    assert attacker.audit_index() is not None and calls == [trained, settings.fl.batch_size]
