"""Captures without Flower: the key, the files, and a replay equal to the live attack."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from filelock import FileLock, Timeout
from flwr.app import ArrayRecord, MetricRecord, RecordDict
from safetensors import safe_open

from fl_leak.config import CaptureMode, RunConfig, compose
from fl_leak.fl import capture, orchestrator
from fl_leak.fl.capture import (
    Capture,
    CaptureWriter,
    CapturingAttacker,
    capture_key,
    replay,
    source_digest,
    tree_digest,
)
from fl_leak.fl.local_data import load_split
from fl_leak.fl.oracle import Oracle
from fl_leak.fl.orchestrator import effective_mode, run
from fl_leak.fl.sink import ResultSink
from fl_leak.fl.task import initial_model, model_with, samples, sgd_steps, to_arrays
from fl_leak.fl.validation import ConfigError
from fl_leak.records import RESULTS_FILE

BASE = ["model=cnn2_c1", "fl.num_clients=2", "fl.rounds=1", "fl.lr=0.1", "audit.max_dense=0"]
TIMINGS = ("seconds",)


def client_update(
    settings: RunConfig, sent: ArrayRecord, indices: list[int]
) -> tuple[RecordDict, Oracle]:
    """What a client replies (weights after one SGD step) and its batch, outside Flower."""
    dataset = load_split(settings.data, train=True)
    model = model_with(settings, dataset.info, sent)
    inputs, labels = samples(dataset, torch.tensor(indices), settings.dtype.torch)
    (loss,) = sgd_steps(model, [(inputs, labels)], settings.fl.lr)
    metrics = MetricRecord({"num-examples": len(indices), "train-loss": loss})
    return RecordDict({"arrays": to_arrays(model), "metrics": metrics}), Oracle(inputs, labels)


def live_run_with_capture(settings: RunConfig, output_dir: Path, capture_dir: Path) -> None:
    """One round of two clients attacked live by a ``CapturingAttacker``; client 2 raised."""
    info = load_split(settings.data, train=True).info
    sink = ResultSink(output_dir, settings, info.class_names)
    writer = CaptureWriter(capture_dir, settings)
    attacker = CapturingAttacker(settings, info, sink, writer)
    sent = to_arrays(initial_model(settings, info))
    sink.evaluation(0, 0.25, 2.5)
    for client, indices in ((0, [3]), (1, [40])):
        reply, oracle = client_update(settings, sent, indices)
        attacker.attack_update(1, client, sent, reply, oracle)
    attacker.client_failed(1, 2, "injected failure")
    sink.end_round(1, clients_seconds=1.0, attack_seconds=2.0, aggregate_seconds=0.1)
    sink.evaluation(1, 0.5, 2.0)
    summary = json.loads(sink.write_summary(audit_index=attacker.audit_index()).read_text())
    writer.close(summary)


def records(output_dir: Path) -> list[dict]:
    lines = (output_dir / RESULTS_FILE).read_text().splitlines()
    return [
        {key: value for key, value in json.loads(line).items() if key not in TIMINGS}
        for line in lines
    ]


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunConfig, Path, Path]:
    settings = compose(BASE)
    root = tmp_path_factory.mktemp("captured")
    live_run_with_capture(settings, root / "live", root / "capture")
    return settings, root / "live", root / "capture"


def test_a_capture_reads_back_bit_for_bit(captured: tuple[RunConfig, Path, Path]) -> None:
    settings, _, directory = captured
    info = load_split(settings.data, train=True).info
    sent = to_arrays(initial_model(settings, info))
    reply, oracle = client_update(settings, sent, [3])

    capture = Capture(directory)

    ok, failure = capture.updates[0], capture.updates[2]
    assert (ok.round, ok.client, failure.client, failure.error) == (1, 0, 2, "injected failure")
    for name, tensor in sent.to_torch_state_dict().items():
        assert torch.equal(capture.sent(1).to_torch_state_dict()[name], tensor)
    back = capture.reply(ok)
    for name, tensor in reply["arrays"].to_torch_state_dict().items():
        assert torch.equal(back["arrays"].to_torch_state_dict()[name], tensor)
    assert dict(back["metrics"]) == dict(reply["metrics"])
    truth = capture.oracle(ok)
    assert truth is not None and torch.equal(truth.inputs, oracle.inputs)
    assert torch.equal(truth.labels, oracle.labels)
    assert [entry["round"] for entry in capture.rounds] == [0, 1]


def test_the_server_files_hold_tensors_only_and_no_ground_truth(
    captured: tuple[RunConfig, Path, Path],
) -> None:
    _, _, directory = captured
    files = [path for path in directory.rglob("*") if path.is_file()]
    assert {path.suffix for path in files} == {".json", ".safetensors"}
    server_keys = set()
    for path in (directory / "server").iterdir():
        with safe_open(path, framework="pt") as handle:  # a header and raw tensors, no code
            server_keys |= {key.split("/")[0] for key in handle.keys()}  # noqa: SIM118
    assert server_keys == {"sent", "arrays"}
    for path in (directory / "oracle").iterdir():
        with safe_open(path, framework="pt") as handle:
            assert set(handle.keys()) == {"inputs", "labels"}


def test_a_replay_equals_the_live_attack(
    captured: tuple[RunConfig, Path, Path], tmp_path: Path
) -> None:
    settings, live, directory = captured

    summary = replay(Capture(directory), settings, tmp_path, capture={"replayed": True})

    assert records(tmp_path) == records(live)
    assert [record["status"] for record in records(tmp_path)] == ["ok", "ok", "error"]
    live_summary = json.loads((live / "summary.json").read_text())
    assert summary["mean"]["psnr"] == live_summary["mean"]["psnr"]
    assert summary["test_accuracy"] == 0.5 and summary["initial_test_accuracy"] == 0.25
    assert summary["capture"] == {"replayed": True}
    assert (tmp_path / "grid_round_1.png").exists()


def test_another_attack_replays_the_same_capture(
    captured: tuple[RunConfig, Path, Path], tmp_path: Path
) -> None:
    _, live, directory = captured
    # LSMR stopped early: preconditioned CGLS would reach the exact solve even at this tolerance
    coarse = compose([*BASE, "+attack.options.tolerance=1e-2", "+attack.options.method=lsmr"])

    replay(Capture(directory), coarse, tmp_path)

    live_psnr = [record["psnr"] for record in records(live)[:2]]
    coarse_psnr = [record["psnr"] for record in records(tmp_path)[:2]]
    assert all(c < p - 20 for c, p in zip(coarse_psnr, live_psnr, strict=True))


@pytest.mark.parametrize(
    "change",
    [
        "attack=hybrid",
        "+attack.options.tolerance=1e-3",
        "audit.max_dense=10",
        "device=cpu",
        "ray.num_cpus=1",
        "capture.mode=replay",
        "fl.client_cpus=2",
        "fl.round_timeout=5",
    ],
)
def test_settings_that_do_not_shape_the_updates_share_the_key(change: str) -> None:
    assert capture_key(compose([*BASE, change])) == capture_key(compose(BASE))


@pytest.mark.parametrize(
    "change",
    [
        "model=cnn2_c5",
        "fl.batch_size=2",
        "fl.lr=0.01",
        "fl.local_steps=2",
        "seed=1",
        "dtype=float64",
        "fl.num_clients=3",
        "fl.fault.clients=[1]",
        "data=mnist",
        "defense=prune",
        "fl.local_data=partition",
        "fl.attack_rounds=[1]",
    ],
)
def test_settings_that_shape_the_updates_change_the_key(change: str) -> None:
    assert capture_key(compose([*BASE, change])) != capture_key(compose(BASE))


def test_a_change_to_the_code_changes_the_source_digest(tmp_path: Path) -> None:
    package = Path(__file__).resolve().parent.parent / "fl_leak"
    copy = tmp_path / "fl_leak"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = tree_digest(copy)
    client = copy / "fl" / "client_app.py"
    client.write_text(client.read_text() + "\n# a local change to the client\n")

    assert before == source_digest()  # the copy is the package itself
    assert tree_digest(copy) != before


def test_a_capture_made_by_other_code_is_not_replayed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = compose([*BASE, "capture.mode=replay", f"capture.dir={tmp_path}"])
    key_now = capture_key(settings)
    (tmp_path / key_now).mkdir()
    (tmp_path / key_now / "capture.json").write_text("{}")
    monkeypatch.setattr(capture, "source_digest", lambda: "another version of the code")

    assert capture_key(settings) != key_now
    with pytest.raises(ConfigError, match="holds no capture"):
        run(settings, tmp_path / "out")


def test_a_replay_runs_without_the_captures_lock(
    captured: tuple[RunConfig, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sweeps of other attacks on the same capture replay it side by side, not one by one."""
    _, _, directory = captured
    settings = compose([*BASE, "capture.mode=replay", f"capture.dir={tmp_path}"])
    key = capture_key(settings)
    shutil.copytree(directory, tmp_path / key)
    lock_free = []

    def replay_checking_the_lock(*args: object, **kwargs: object) -> dict:
        try:  # another job's attempt: a separate lock on the same file
            with FileLock(tmp_path / f"{key}.lock", timeout=0):
                lock_free.append(True)
        except Timeout:
            lock_free.append(False)
        return {"replayed": True}

    monkeypatch.setattr(orchestrator, "replay", replay_checking_the_lock)

    assert run(settings, tmp_path / "out") == {"replayed": True}
    assert lock_free == [True]


def test_replay_without_a_capture_is_an_error_naming_the_setting(tmp_path: Path) -> None:
    settings = compose([*BASE, "capture.mode=replay", f"capture.dir={tmp_path}"])
    with pytest.raises(ConfigError, match=r"capture\.mode=replay .* no capture cnn2_c1-"):
        run(settings, tmp_path / "out")


def test_auto_reuses_captures_in_a_multirun_only() -> None:
    assert effective_mode(CaptureMode.auto, multirun=True) is CaptureMode.reuse
    assert effective_mode(CaptureMode.auto, multirun=False) is CaptureMode.off
    assert effective_mode(CaptureMode.replay, multirun=False) is CaptureMode.replay
