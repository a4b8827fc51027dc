"""Flower's Deployment Engine: a SuperLink and two SuperNodes on 127.0.0.1, ``flwr run . <name>``.

The commands are those of docs/deployment.md (a test checks that the page shows them).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from fl_leak.config import compose
from fl_leak.fl import simulate
from fl_leak.fl.flwr_apps import overrides
from tests.flwr_processes import (
    REPO,
    alive,
    descendants,
    flwr_environment,
    free_port,
    processes_mentioning,
    stop,
    wait_for_port,
)

DOCS = REPO / "docs" / "deployment.md"
FEDERATION = "lab"
SUPERLINK = (
    "flower-superlink --insecure --host 127.0.0.1 --port {link} "
    "--disable-runtime-dependency-installation"
)
SUPERNODE = (
    "flower-supernode --insecure --superlink 127.0.0.1:{link} --host 127.0.0.1 --port {port} "
    '--node-config "partition-id={partition} num-partitions=2"'
)
CONNECTION = '[superlink.lab]\naddress = "127.0.0.1:{link}"\ninsecure = true\n'
RUN_CONFIG = {"fl.num-clients": 2, "fl.rounds": 1, "audit.max-dense": 0}
FLWR_RUN = (
    "flwr run {app} lab --stream --run-config "
    "\"fl.num-clients=2 fl.rounds=1 audit.max-dense=0 output-dir='{output}'\""
)
DOCS_VALUES = {"link": 9093, "app": ".", "output": "/tmp/leak-deployment"}


def test_docs_show_the_commands_of_the_deployment_test() -> None:
    page = DOCS.read_text()
    assert SUPERLINK.format(**DOCS_VALUES) in page
    for partition, port in enumerate((9094, 9095)):
        assert SUPERNODE.format(**DOCS_VALUES, port=port, partition=partition) in page
    assert CONNECTION.format(**DOCS_VALUES) in page
    assert FLWR_RUN.format(**DOCS_VALUES) in page


def _records(output_dir: Path) -> list[dict[str, Any]]:
    lines = (output_dir / "results.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _simulation(output_dir: Path) -> list[dict[str, Any]]:
    """The same run in fl-leak's simulation: pyproject's run config with RUN_CONFIG on top."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    run_config = {**pyproject["tool"]["flwr"]["app"]["config"], **RUN_CONFIG}
    simulate(compose(overrides(run_config)), output_dir)
    return _records(output_dir)


@pytest.mark.slow  # about 35 s: CI runs this file after the default selection
def test_a_round_on_a_superlink_and_two_supernodes_equals_the_simulation(tmp_path: Path) -> None:
    home, output_dir = tmp_path / "flwr-home", tmp_path / "outputs"
    environment = flwr_environment(home)
    link = free_port()
    started: list[subprocess.Popen[bytes]] = []

    def start(command: str, name: str) -> None:
        directory = tmp_path / name
        directory.mkdir()
        with (tmp_path / f"{name}.log").open("wb") as log:
            started.append(
                subprocess.Popen(
                    shlex.split(command),
                    cwd=directory,
                    env=environment,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )

    begin = time.monotonic()
    try:
        start(SUPERLINK.format(link=link), "superlink")
        wait_for_port(link)
        for partition in (0, 1):
            port = free_port()
            start(SUPERNODE.format(link=link, port=port, partition=partition), f"node{partition}")
            wait_for_port(port)
        home.mkdir(exist_ok=True)  # the SuperLink may have made it
        (home / "config.toml").write_text(
            '[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = ":local:"\n\n'
            + CONNECTION.format(link=link)
        )
        ready = time.monotonic()
        command = FLWR_RUN.format(app=REPO, output=output_dir)
        result = subprocess.run(
            shlex.split(command),
            cwd=tmp_path,
            env=environment,
            capture_output=True,
            text=True,
            timeout=400,
        )
        run_seconds = time.monotonic() - ready
    finally:
        processes = [process.pid for process in started]
        every = [*descendants(processes), *processes]
        stop([process.pid for process in started[:0:-1]])  # the SuperNodes, then the SuperLink
        stop(processes[:1])
        stop(every)  # whatever they started and left
        for process in started:
            process.wait(timeout=30)
    assert not [pid for pid in every if alive(pid)]
    assert processes_mentioning(f"127.0.0.1:{link}", str(home)) == []
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    deployed = _records(output_dir)
    outcome = [(r["round"], r["client"], r["status"]) for r in deployed]
    assert outcome == [(1, 0, "ok"), (1, 1, "ok")]
    summary = json.loads((output_dir / "summary.json").read_text())
    simulated = _simulation(tmp_path / "simulation")
    assert [r["client"] for r in simulated] == [0, 1]
    for mine, reference in zip(deployed, simulated, strict=True):
        assert mine["psnr"] == pytest.approx(reference["psnr"], rel=1e-6)
        assert mine["psnr"] >= 60
    print(
        f"SuperLink and SuperNodes up in {ready - begin:.1f} s; flwr run {run_seconds:.1f} s; "
        f"round 1: clients {summary['rounds'][1]['clients_seconds']:.1f} s, attacks "
        f"{summary['rounds'][1]['attack_seconds']:.1f} s; PSNR "
        + ", ".join(f"{r['psnr']:.2f}" for r in deployed)
    )
