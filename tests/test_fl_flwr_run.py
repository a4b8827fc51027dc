"""``flwr run .`` runs the same apps from pyproject's Flower app config."""

from __future__ import annotations

import json
from pathlib import Path

from tests.flwr_processes import BIN, REPO, flwr_run, processes_mentioning


def test_flwr_run_runs_the_apps_of_pyproject(tmp_path: Path) -> None:
    home, output_dir = tmp_path / "flwr-home", tmp_path / "outputs"
    command = [
        str(BIN / "flwr"),
        "run",
        str(REPO),
        "--stream",
        "--federation-config",
        "num-supernodes=2",
        "--run-config",
        f"fl.num-clients=2 fl.rounds=1 output-dir='{output_dir}'",
    ]
    result = flwr_run(command, home, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = (output_dir / "results.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [(r["round"], r["client"], r["status"]) for r in records] == [(1, 0, "ok"), (1, 1, "ok")]
    assert all(r["psnr"] >= 60 for r in records)
    assert (output_dir / "summary.json").exists()
    assert "round 1/1: 2/2 updates attacked" in result.stdout
    assert processes_mentioning(str(home)) == []
