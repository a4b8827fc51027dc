"""Real multiruns of ``fl-leak``: a grid in parallel, an attack sweep on one capture, a failing job.

Each sweep is one ``fl-leak --multirun`` command (1 round, 2 clients, the embedded data); its
directory then goes through ``fl-leak-report``. The attack sweep and the failing sweep share a
capture cache; the grid has its own.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from fl_leak.cli.report import main as report_main
from fl_leak.report.build import Report, build_report
from fl_leak.report.jobs import Job, find_jobs

BASE = ["fl.num_clients=2", "fl.rounds=1", "fl.lr=0.1", "audit.max_dense=0"]
PARALLEL = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
TOLERANCES = ("1e-10", "1e-4", "1e-2")
TIMINGS = {"seconds"}
STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


@dataclass
class Sweep:
    """A finished multirun: its directory, console text, jobs and report."""

    directory: Path
    console: str

    @property
    def jobs(self) -> list[Job]:
        return find_jobs(self.directory)

    def report(self) -> Report:
        return build_report(self.directory, self.directory / "report")


def multirun(directory: Path, capture_dir: Path, *overrides: str) -> Sweep:
    command = [
        sys.executable,
        "-m",
        "fl_leak.cli.main",
        "--multirun",
        *BASE,
        *overrides,
        f"capture.dir={capture_dir}",
        f"hydra.sweep.dir={directory}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    return Sweep(directory, result.stdout + result.stderr)


def single_run(run_dir: Path, *overrides: str) -> Job:
    """One ``fl-leak`` run (not a multirun) with ``BASE`` and ``overrides``, as its job."""
    command = [
        sys.executable,
        "-m",
        "fl_leak.cli.main",
        *BASE,
        *overrides,
        f"hydra.run.dir={run_dir}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return find_jobs(run_dir)[0]


def outcome(job: Job) -> list[dict[str, Any]]:
    return [{k: v for k, v in record.items() if k not in TIMINGS} for record in job.records]


def by_tolerance(sweep: Sweep) -> dict[float, Job]:
    return {job.settings["attack.options.tolerance"]: job for job in sweep.jobs}


@pytest.fixture(scope="module")
def capture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("captures")


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    """2 models x 2 batch sizes, two jobs at a time (joblib), each with its own private Ray."""
    return multirun(
        tmp_path_factory.mktemp("grid"),
        tmp_path_factory.mktemp("grid_captures"),
        "model=cnn2_c1,cnn2_c5",
        "fl.batch_size=1,2",
        *PARALLEL,
    )


@pytest.fixture(scope="module")
def attack_sweep(tmp_path_factory: pytest.TempPathFactory, capture_dir: Path) -> Sweep:
    """Three attack settings on one FL setting, two jobs at a time racing for its capture."""
    return multirun(
        tmp_path_factory.mktemp("attacks"),
        capture_dir,
        "model=cnn2_c1",
        f"+attack.options.tolerance={','.join(TOLERANCES)}",
        "+attack.options.method=lsmr",  # preconditioned CGLS is exact at any of these tolerances
        *PARALLEL,
    )


def test_the_grid_report_has_one_row_per_attacked_update(grid: Sweep) -> None:
    report = grid.report()

    table = pd.read_csv(grid.directory / "report" / "results.csv")
    assert len(report.jobs) == 4 and report.failed.empty
    assert len(table) == 4 * 2  # jobs x clients, one round
    assert {"job", "overrides", "model", "fl.batch_size", "round", "client", "status"} <= set(
        table.columns
    )
    assert {"psnr", "ssim", "label_accuracy", "audit_index", "error"} <= set(table.columns)
    counts = table.groupby(["model", "fl.batch_size"]).size()
    assert counts.to_dict() == {(m, b): 2 for m in ("cnn2_c1", "cnn2_c5") for b in (1, 2)}
    assert (table["fl.batch_size"] == table["batch_size"]).all()
    assert set(table["status"]) <= {"ok", "error"}
    assert table.loc[table["status"] == "error", "error"].notna().all()
    batch_one = table[table["batch_size"] == 1]
    assert (batch_one["status"] == "ok").all() and (batch_one["psnr"] > 80).all()
    names = {path.name for path in report.files}
    assert {"results.csv", "summary.csv", "failed_jobs.csv", "collage.png"} <= names
    assert {"psnr_vs_batch_size.png", "psnr_by_attack_and_model.png"} <= names
    explained = (grid.directory / "report" / "README.md").read_text()
    assert "psnr_vs_audit_index.png" in names or "psnr_vs_audit_index.png" in explained
    assert all(path.stat().st_size > 0 for path in report.files)


def _span(job: Job) -> tuple[datetime, datetime]:
    lines = (job.directory / "main.log").read_text().splitlines()
    stamps = [datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f") for m in map(STAMP.match, lines) if m]
    return stamps[0], stamps[-1]


def test_parallel_jobs_ran_at_once_each_with_its_own_ray(grid: Sweep) -> None:
    jobs = grid.jobs
    spans = sorted(_span(job) for job in jobs)

    assert all(job.status == "ok" for job in jobs)
    assert all(job.summary and job.summary["ray_start_seconds"] > 0 for job in jobs)
    assert all(job.summary["capture"]["replayed"] is False for job in jobs if job.summary)
    overlapping = any(later[0] < earlier[1] for earlier, later in pairwise(spans))
    assert overlapping, spans


def test_parallel_jobs_label_their_log_lines(grid: Sweep) -> None:
    lines = [line for line in grid.console.splitlines() if "[fl_leak" in line]
    labels = {re.search(r"\[job (\d+)\]", line).group(1) for line in lines if "[job " in line}

    assert lines and all("[job " in line for line in lines), lines[:5]
    assert labels == {"0", "1", "2", "3"}


def test_an_attack_sweep_runs_flower_once_and_replays_the_rest(
    attack_sweep: Sweep, capture_dir: Path
) -> None:
    summaries = [job.summary for job in attack_sweep.jobs]

    replayed = sorted(summary["capture"]["replayed"] for summary in summaries if summary)
    assert replayed == [False, True, True]
    assert len({summary["capture"]["key"] for summary in summaries if summary}) == 1
    assert attack_sweep.console.count("replaying capture") == 2
    assert attack_sweep.console.count("saved capture") == 1
    psnr = {tol: job.summary["mean"]["psnr"] for tol, job in by_tolerance(attack_sweep).items()}
    assert psnr[1e-10] > psnr[1e-4] > psnr[1e-2]


def test_a_replay_equals_the_live_run_it_was_captured_from(
    attack_sweep: Sweep, capture_dir: Path, tmp_path: Path
) -> None:
    live = next(job for job in attack_sweep.jobs if not job.summary["capture"]["replayed"])

    replayed = single_run(tmp_path, *live.overrides, "capture.mode=replay")

    assert replayed.summary["capture"]["replayed"] is True
    assert outcome(replayed) == outcome(live)


def test_a_replayed_job_of_an_attack_sweep_equals_a_separate_live_run(
    attack_sweep: Sweep, tmp_path: Path
) -> None:
    """The sweep-against-separate-runs check in small: one replayed job against one live run."""
    replayed = next(job for job in attack_sweep.jobs if job.summary["capture"]["replayed"])

    alone = single_run(tmp_path, *replayed.overrides, "capture.mode=off")

    assert "capture" not in alone.summary
    assert outcome(alone) == outcome(replayed)


@pytest.mark.slow
def test_an_attack_sweep_equals_separate_runs(
    attack_sweep: Sweep, tmp_path_factory: pytest.TempPathFactory
) -> None:
    separate = multirun(
        tmp_path_factory.mktemp("separate"),
        tmp_path_factory.mktemp("unused"),
        "model=cnn2_c1",
        f"+attack.options.tolerance={','.join(TOLERANCES)}",
        "+attack.options.method=lsmr",  # preconditioned CGLS is exact at any of these tolerances
        "capture.mode=off",
    )

    assert separate.console.count("replaying capture") == 0
    swept, alone = by_tolerance(attack_sweep), by_tolerance(separate)
    assert set(swept) == set(alone) and len(swept) == 3
    for tolerance, job in swept.items():
        assert outcome(job) == outcome(alone[tolerance])


def test_a_failing_job_does_not_stop_the_others_and_the_report_names_it(
    attack_sweep: Sweep,
    capture_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sweep = multirun(
        tmp_path / "sweep",
        capture_dir,
        "model=cnn2_c1",
        "+attack.options.tolerance=1e-10",
        "fl.batch_size=1000,1",  # the first job cannot run: batches larger than the partitions
    )

    failing, fine = sweep.jobs
    assert failing.status == "failed" and "fl.batch_size=1000" in (failing.error or "")
    assert json.loads((failing.directory / "status.json").read_text())["status"] == "failed"
    assert fine.status == "ok" and len(fine.records) == 2
    assert "job " in sweep.console and "failed, the sweep goes on" in sweep.console
    assert report_main([str(sweep.directory), "--out", str(tmp_path / "report")]) == 0
    printed = capsys.readouterr().out
    assert "job 0 failed or left no results: ConfigError" in printed
    assert "fl.batch_size=1000" in printed
