"""``flwr run .`` runs the same apps from pyproject's Flower app config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _processes_mentioning(text: str) -> list[int]:
    """Ids of processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in command:
                found.append(int(entry.name))
    return found


def _stop(pids: list[int]) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}/cmdline").exists() for pid in pids):
        if time.monotonic() > deadline:
            for pid in pids:
                if Path(f"/proc/{pid}").exists():
                    os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.5)


def test_flwr_run_runs_the_apps_of_pyproject(tmp_path: Path) -> None:
    home, output_dir = tmp_path / "flwr-home", tmp_path / "outputs"
    bin_dir = str(Path(sys.executable).parent)
    environment = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLWR_HOME": str(home),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    }
    command = [
        str(Path(bin_dir) / "flwr"),
        "run",
        str(REPO),
        "--stream",
        "--federation-config",
        "num-supernodes=2",
        "--run-config",
        f"fl.num-clients=2 fl.rounds=1 output-dir='{output_dir}'",
    ]
    try:
        result = subprocess.run(
            command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=400
        )
    finally:  # flwr run leaves a detached SuperLink whose state lives in our FLWR_HOME
        _stop(_processes_mentioning(str(home)))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = (output_dir / "results.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [(r["round"], r["client"], r["status"]) for r in records] == [(1, 0, "ok"), (1, 1, "ok")]
    assert all(r["psnr"] >= 60 for r in records)
    assert (output_dir / "summary.json").exists()
    assert "round 1/1: 2/2 updates attacked" in result.stdout
    assert _processes_mentioning(str(home)) == []
