"""Every command of the README, run at a reduced size, shows what its comment claims.

The commands are read from the README's bash blocks, so a command added there without a check here
fails ``test_every_readme_command_is_checked``. Each check runs the command with a few overrides
that shrink it (fewer clients and rounds, the audit's fast bound) and asserts the claimed outcome.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
PROGRAMS = {"fl-leak": "fl_leak.cli.main", "fl-leak-audit": "fl_leak.cli.audit"}
SMALL = ("fl.rounds=1", "audit.max_dense=0")  # and two clients where a command sets none
COMMAND = re.compile(r"\.venv/bin/(fl-leak(?:-audit|-report)?)\b([^#\n]*)")


def readme_commands() -> set[tuple[str, str]]:
    """(program, arguments) of every fl-leak command in the README's bash blocks."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    return {
        (program, " ".join(arguments.split()))
        for block in blocks
        for program, arguments in COMMAND.findall(block)
    }


@dataclass
class Outcome:
    """What a command left: exit code, console text, and the records of its run folder."""

    returncode: int
    text: str
    folder: Path

    @property
    def records(self) -> list[dict[str, Any]]:
        lines = (self.folder / "results.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]

    @property
    def summary(self) -> dict[str, Any]:
        return json.loads((self.folder / "summary.json").read_text())


def _mean_psnr(outcome: Outcome) -> float:
    return float(outcome.summary["mean"]["psnr"])


def _hybrid_lifts_a_deficient_network(outcome: Outcome) -> None:
    assert 15 <= _mean_psnr(outcome) <= 40  # linear alone: about 9 dB
    assert all(record["audit_index"] < 0 for record in outcome.records)


def _exact_in_float64(outcome: Outcome) -> None:
    assert _mean_psnr(outcome) >= 60
    assert not outcome.summary["shortfalls"]


def _fedavg_degrades(outcome: Outcome) -> None:
    assert _mean_psnr(outcome) < 30
    assert all(record["steps"] == 5 for record in outcome.records)


def _default_recovers(outcome: Outcome) -> None:
    assert _mean_psnr(outcome) >= 60 and outcome.summary["status"] == "ok"


def _help_lists_groups(outcome: Outcome) -> None:
    for group in ("model:", "attack:", "defense:", "fl:"):
        assert group in outcome.text


def _epsilon_in_every_record(outcome: Outcome) -> None:
    assert all(record["epsilon"] is not None for record in outcome.records)
    assert "privacy: epsilon up to" in outcome.text


def _local_dp_spoils_the_reconstruction(outcome: Outcome) -> None:
    assert all(record["defense_options"].count("where=client") for record in outcome.records)
    assert _mean_psnr(outcome) < 30


def _server_sees_the_sum(outcome: Outcome) -> None:
    assert [(r["client"], r["aggregated_clients"]) for r in outcome.records] == [(None, 4)]


def _parallel_jobs_then_report(outcome: Outcome) -> None:
    jobs = sorted(path.parent for path in outcome.folder.rglob("status.json"))
    statuses = [json.loads((job / "status.json").read_text())["status"] for job in jobs]
    assert statuses == ["ok"] * 4
    assert outcome.text.count("replaying capture") == 2
    assert re.search(r"\[job [0-3]\]", outcome.text)
    report = subprocess.run(
        [sys.executable, "-m", "fl_leak.cli.report", str(outcome.folder)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr
    assert (outcome.folder / "report" / "README.md").exists()


def _audit_index(index: int) -> Callable[[Outcome], None]:
    def check(outcome: Outcome) -> None:
        assert f"index (batch size 1, random probe): {index}" in outcome.text
        assert "precision:" in outcome.text

    return check


def _audit_table_and_csv(outcome: Outcome) -> None:
    assert "deficiency per layer against batch size" in outcome.text
    assert (outcome.folder / "lenet_audit.csv").exists()


@dataclass(frozen=True)
class Check:
    """How to shrink a README command, and what its comment claims."""

    shrink: tuple[str, ...]
    claim: Callable[[Outcome], None]
    multirun: bool = False


CHECKS: dict[tuple[str, str], Check] = {
    ("fl-leak", ""): Check(SMALL, _default_recovers),
    ("fl-leak", "model=cnn3_c1 attack=hybrid"): Check(SMALL, _hybrid_lifts_a_deficient_network),
    ("fl-leak", "model=lenet dtype=float64"): Check(SMALL, _exact_in_float64),
    ("fl-leak", "fl.local_steps=5"): Check(SMALL, _fedavg_degrades),
    ("fl-leak", "--help"): Check((), _help_lists_groups),
    ("fl-leak", "defense=dp_sgd defense.options.noise_multiplier=0.5"): Check(
        SMALL, _epsilon_in_every_record
    ),
    ("fl-leak", "defense=clip_noise defense.options.where=client"): Check(
        SMALL, _local_dp_spoils_the_reconstruction
    ),
    ("fl-leak", "defense=secagg fl.num_clients=4"): Check(SMALL, _server_sees_the_sum),
    (
        "fl-leak",
        "--multirun model=cnn2_c5,cnn3_c1 attack=linear,hybrid hydra/launcher=joblib "
        "hydra.launcher.n_jobs=2",
    ): Check(SMALL, _parallel_jobs_then_report, multirun=True),
    ("fl-leak-audit", "model=cnn6d"): Check(("max_dense=0", "rtol=0"), _audit_index(0)),
    ("fl-leak-audit", "model=lenet batch_sizes=[1,2,4,8] output=lenet_audit.csv"): Check(
        ("max_dense=0", "rtol=0"), _audit_table_and_csv
    ),
}
# checked by other tests, which need what a README line cannot carry
ELSEWHERE = {
    ("fl-leak", "ray.address=auto"): "tests/test_fl_simulation.py (a Ray head it starts)",
    ("fl-leak-report", "multirun/<date>/<time>"): "the multirun check above",
    ("fl-leak", "--config-dir my_configs model=my_net"): "tests/test_own_model.py",
    ("fl-leak-audit", "--config-dir my_configs model=my_net"): "tests/test_own_model.py",
}


def test_every_readme_command_is_checked() -> None:
    assert readme_commands() == set(CHECKS) | set(ELSEWHERE)


@pytest.mark.slow  # about 6 minutes in all; CI runs it after the default selection
@pytest.mark.parametrize("command", list(CHECKS), ids=[" ".join(c).strip() for c in CHECKS])
def test_a_readme_command_shows_what_it_claims(command: tuple[str, str], tmp_path: Path) -> None:
    program, arguments = command
    check = CHECKS[command]
    where = "hydra.sweep.dir" if check.multirun else "hydra.run.dir"
    extra = [f"{where}={tmp_path}"] if program == "fl-leak" and arguments != "--help" else []
    if check.multirun:  # a capture cache of its own: the claim is about what this sweep simulates
        extra.append(f"capture.dir={tmp_path / 'captures'}")
    shrunk_run = check.shrink == SMALL and "fl.num_clients" not in arguments
    clients = ["fl.num_clients=2"] if shrunk_run else []
    line = [sys.executable, "-m", PROGRAMS[program], *arguments.split(), *check.shrink, *clients]
    line += extra

    result = subprocess.run(line, capture_output=True, text=True, timeout=900, cwd=tmp_path)

    outcome = Outcome(result.returncode, result.stdout + result.stderr, tmp_path)
    assert result.returncode == 0, outcome.text[-4000:]
    check.claim(outcome)
