"""Ctrl-C and SIGTERM on a real ``fl-leak`` run: it stops, keeps what it did, leaves nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROUNDS = 50  # far more than run before the signal


def _session_processes(session: int) -> list[int]:
    """Ids of live processes of the session ``session`` (field 6 of /proc/<pid>/stat)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def _session_processes_after(session: int, grace: float) -> list[int]:
    """The session's live processes once they are gone or ``grace`` seconds have passed (a
    worker killed at shutdown may still be exiting when the run's own process has)."""
    deadline = time.monotonic() + grace
    left = _session_processes(session)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = _session_processes(session)
    return left


def _wait_for_records(results: Path, process: subprocess.Popen, count: int) -> None:
    deadline = time.monotonic() + 300
    while not (results.exists() and len(results.read_text().splitlines()) >= count):
        assert process.poll() is None, "the run ended before the signal"
        assert time.monotonic() < deadline, "no record in time"
        time.sleep(0.2)


@pytest.mark.parametrize(
    "signal_number",
    [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)],  # CI runs both
    ids=["SIGINT", "SIGTERM"],
)
def test_a_signal_stops_a_run_mid_round_and_keeps_its_records(
    signal_number: int, tmp_path: Path
) -> None:
    output_dir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "fl_leak.cli.main",
        f"fl.rounds={ROUNDS}",
        "fl.num_clients=4",
        "audit.enabled=false",
        f"hydra.run.dir={output_dir}",
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        _wait_for_records(output_dir / "results.jsonl", process, count=2)  # inside round 1
        process.send_signal(signal_number)
        sent = time.monotonic()
        output, _ = process.communicate(timeout=60)
        stop_seconds = time.monotonic() - sent
    finally:
        left = _session_processes_after(process.pid, grace=10.0)
        for pid in left:
            os.kill(pid, signal.SIGKILL)

    text = output.decode()
    assert process.returncode == 130, text[-3000:]
    assert stop_seconds < 30
    assert left == [], f"processes left behind: {left}"
    assert json.loads((output_dir / "status.json").read_text())["status"] == "interrupted"
    summary = json.loads((output_dir / "summary.json").read_text())
    records = [json.loads(line) for line in (output_dir / "results.jsonl").read_text().splitlines()]
    assert summary["status"] == "interrupted"
    assert 2 <= summary["records"] == len(records) < ROUNDS * 4
    assert all(record["status"] == "ok" for record in records)
    assert "Traceback" not in text
    assert f"{signal.Signals(signal_number).name} received, stopping" in text
