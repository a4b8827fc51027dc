"""Real Flower simulations on Ray: outputs, FedAvg, failing clients, seeds, an existing cluster.

Simulations are shared through module-scoped fixtures: one through the ``fl-leak`` command (with
its private Ray), the others in-process, attached to a Ray head started here on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pytest
from matplotlib.image import imread

from fl_leak.config import compose
from fl_leak.fl import simulate
from fl_leak.records import LeakRecord

BASE = [
    "model=cnn2_c1",
    "fl.num_clients=4",
    "fl.rounds=2",
    "fl.batch_size=1",
    "fl.lr=0.1",
    "audit.max_dense=0",
    "seed=0",
]
TIMINGS = {"seconds"}


@dataclass
class Run:
    """A finished simulation: its output directory and its console text."""

    output_dir: Path
    console: str = ""

    @property
    def records(self) -> list[dict[str, Any]]:
        lines = (self.output_dir / "results.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]

    @property
    def summary(self) -> dict[str, Any]:
        return json.loads((self.output_dir / "summary.json").read_text())


def run_in_process(output_dir: Path, *overrides: str) -> Run:
    simulate(compose([*BASE, *overrides]), output_dir)
    return Run(output_dir)


def run_on_cluster(address: str, output_dir: Path, *overrides: str) -> Run:
    """An in-process run attached to the module's Ray head (no private Ray to start)."""
    return run_in_process(output_dir, f"ray.address={address}", *overrides)


@pytest.fixture(scope="module")
def command_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """``fl-leak`` itself: 2 rounds of FedSGD with 4 clients on the embedded data."""
    output_dir = tmp_path_factory.mktemp("command")
    command = [sys.executable, "-m", "fl_leak.cli.main", *BASE, f"hydra.run.dir={output_dir}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return Run(output_dir, result.stdout + result.stderr)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def ray_head() -> Iterator[str]:
    """A Ray head on 127.0.0.1 only, started for this module and stopped after it.

    ``ray start --block`` keeps the head's processes as its children and ends them when it is
    terminated: that stops exactly this head, where ``ray stop`` stops every Ray of the machine.
    """
    temp_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths
    environment = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    port = _free_port()
    command = [
        str(Path(sys.executable).parent / "ray"),
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--port={port}",
        "--num-cpus=2",
        "--include-dashboard=false",
        f"--ray-client-server-port={_free_port()}",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
    ]
    head = subprocess.Popen(
        command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        while not (temp_dir / "ray_current_cluster").exists():
            assert head.poll() is None, "ray start exited"
            assert time.monotonic() < deadline, "the Ray head did not come up"
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        head.terminate()
        try:
            head.wait(timeout=120)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()


@pytest.fixture(scope="module")
def fedavg_runs(ray_head: str, tmp_path_factory: pytest.TempPathFactory) -> dict[int, Run]:
    """Round 1 of the command's run again, with 2 and 5 local steps."""
    return {
        steps: run_on_cluster(
            ray_head,
            tmp_path_factory.mktemp(f"steps{steps}"),
            "fl.rounds=1",
            f"fl.local_steps={steps}",
        )
        for steps in (2, 5)
    }


@pytest.fixture(scope="module")
def cluster_run(ray_head: str, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The command's run again, attached to the Ray head instead of a private Ray."""
    return run_on_cluster(ray_head, tmp_path_factory.mktemp("cluster"))


@pytest.fixture(scope="module")
def failing_run(ray_head: str, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One round in which client 2 raises in training; every client evaluates after it."""
    return run_on_cluster(
        ray_head,
        tmp_path_factory.mktemp("fault"),
        "fl.rounds=1",
        "fl.fault.clients=[2]",
        "fl.fraction_evaluate=1.0",
    )


# --- one FedSGD run ----------------------------------------------------------------------------


def test_every_client_and_round_has_a_complete_record(command_run: Run) -> None:
    declared = {field.name for field in fields(LeakRecord)}
    records = command_run.records
    assert [(r["round"], r["client"]) for r in records] == [(1, c) for c in range(4)] + [
        (2, c) for c in range(4)
    ]
    for record in records:
        assert set(record) == declared
        assert record["status"] == "ok" and record["error"] is None
        assert record["attack"] == "linear" and record["model"] == "cnn2_c1"
        assert record["batch_size"] == 1 and record["steps"] == 1
        assert record["num_clients"] == 4 and record["defense"] == "none"
        assert record["audit_index"] == 0 and record["seconds"] > 0


def test_the_linear_attack_recovers_every_image(command_run: Run) -> None:
    for record in command_run.records:
        assert record["psnr"] >= 60, record
        assert record["ssim"] > 0.99 and record["label_accuracy"] == 1.0
        assert record["gradient_relative_error"] < 1e-5


def test_the_summary_holds_means_config_and_accuracy(command_run: Run) -> None:
    summary = command_run.summary
    assert summary["records"] == summary["ok"] == 8 and summary["errors"] == 0
    assert summary["mean"]["psnr"] >= 60
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    assert [entry["round"] for entry in summary["rounds"]] == [0, 1, 2]
    assert summary["config"]["model"] == "cnn2_c1" and summary["config"]["fl"]["num_clients"] == 4
    assert summary["ray_start_seconds"] > 0


def test_each_round_has_an_image_grid(command_run: Run) -> None:
    for server_round in (1, 2):
        image = imread(command_run.output_dir / f"grid_round_{server_round}.png")
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_the_console_shows_progress(command_run: Run) -> None:
    assert "round 1/2: 4/4 updates attacked, 0 errors, mean PSNR" in command_run.console
    assert "running mean" in command_run.console
    assert "round 2: global model test accuracy" in command_run.console


# --- FedAvg --------------------------------------------------------------------------------------


def test_fedavg_records_the_estimate_degrading_with_local_steps(
    command_run: Run, fedavg_runs: dict[int, Run]
) -> None:
    by_steps = {1: [r for r in command_run.records if r["round"] == 1]}
    by_steps |= {steps: run.records for steps, run in fedavg_runs.items()}
    error = {}
    for steps, records in by_steps.items():
        assert [r["client"] for r in records] == [0, 1, 2, 3]
        assert all(r["steps"] == steps and r["status"] == "ok" for r in records)
        error[steps] = max(r["gradient_relative_error"] for r in records)
    assert error[1] < 1e-5 < error[2] < error[5]
    mean_psnr = {steps: sum(r["psnr"] for r in rs) / len(rs) for steps, rs in by_steps.items()}
    assert max(mean_psnr[2], mean_psnr[5]) < mean_psnr[1]


# --- failures ------------------------------------------------------------------------------------


def test_a_failing_client_is_recorded_and_the_run_goes_on(failing_run: Run) -> None:
    *replied, failed = failing_run.records  # partition order; the unnamed client last
    assert [r["client"] for r in replied] == [0, 1, 3]
    assert failed["client"] is None  # its error reply is the node's first: nothing names it
    assert failed["round"] == 1 and failed["status"] == "error" and failed["stage"] == "client"
    assert "injected failure of client 2 in round 1" in failed["error"]
    assert failed["psnr"] is None
    assert all(r["status"] == "ok" and r["psnr"] >= 60 for r in replied)
    summary = failing_run.summary
    assert summary["errors"] == 1 and summary["ok"] == 3
    assert summary["test_accuracy"] is not None
    assert 0.0 <= summary["rounds"][1]["clients_accuracy"] <= 1.0


# --- seeds and clusters ------------------------------------------------------------------------


def test_an_existing_ray_cluster_runs_the_same_experiment_to_the_same_results(
    command_run: Run, cluster_run: Run
) -> None:
    def without_timings(run: Run) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k not in TIMINGS} for r in run.records]

    assert without_timings(cluster_run) == without_timings(command_run)
    assert cluster_run.summary["config"]["ray"]["address"].startswith("127.0.0.1:")
