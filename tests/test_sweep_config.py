"""Sweep settings: typos and wrong types named before a job runs; every study's jobs are valid."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException

from fl_leak.config import CONF_DIR, CONFIG_NAME, CaptureMode, compose, register_configs
from fl_leak.fl import problems

EXPERIMENTS = sorted(path.stem for path in (CONF_DIR / "experiment").glob("*.yaml"))


def sweep_of(experiment: str) -> dict[str, list[str]]:
    """The ``hydra.sweeper.params`` of a study, each as its list of values."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        config = hydra_compose(
            CONFIG_NAME, overrides=[f"experiment={experiment}"], return_hydra_config=True
        )
    return {str(key): str(value).split(",") for key, value in config.hydra.sweeper.params.items()}


def test_a_misspelt_key_in_a_multirun_fails_naming_it_before_any_job_runs(
    tmp_path: Path,
) -> None:
    command = [
        sys.executable,
        "-m",
        "fl_leak.cli.main",
        "--multirun",
        "model=cnn2_c1,cnn2_c5",
        "fl.batch_sise=1,2",
        f"hydra.sweep.dir={tmp_path}",
    ]

    result = subprocess.run(command, capture_output=True, text=True, timeout=300)

    assert result.returncode != 0
    assert "fl.batch_sise" in result.stderr
    assert not list(tmp_path.rglob("results.jsonl"))


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("capture.mode=sometimes", r"capture\.mode"),
        ("capture.mdoe=reuse", r"capture\.mdoe"),
        ("capture.dir=[1,2]", r"capture\.dir"),
        ("fl.local_steps=1.5", r"fl\.local_steps"),
        ("experiment=familly", "familly"),
    ],
)
def test_a_bad_sweep_setting_fails_naming_it(override: str, named: str) -> None:
    with pytest.raises((ConfigCompositionException, MissingConfigException), match=named):
        compose([override])


def test_captures_are_reused_in_multiruns_by_default() -> None:
    settings = compose()
    assert settings.capture.mode is CaptureMode.auto
    assert compose(["capture.mode=replay"]).capture.mode is CaptureMode.replay


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_job_of_every_study_is_valid(experiment: str) -> None:
    sweep = sweep_of(experiment)
    keys = list(sweep)

    jobs = [
        compose(
            [f"experiment={experiment}", *(f"{k}={v}" for k, v in zip(keys, values, strict=True))]
        )
        for values in itertools.product(*sweep.values())
    ]

    assert len(jobs) >= 2
    assert all(job.capture.mode is CaptureMode.reuse for job in jobs)
    for job in jobs:
        assert problems(job) == []


def _runner_sweeps(script: Path) -> list[list[str]]:
    """The override lists of each ``sweep ...`` line of a study's runner script."""
    text = script.read_text().replace("\\\n", " ")
    return [line.split()[1:] for line in text.splitlines() if line.split()[:1] == ["sweep"]]


RUNNERS = {
    "defenses": 3 * 7,
    "baselines": 4 * 3 * 2 + 2 * 2 + 2 + 2,
    "realistic": 6 * 2 * 2,
}  # study: its least number of jobs


@pytest.mark.parametrize(("study", "least"), RUNNERS.items())
def test_every_job_of_a_study_runner_is_valid(study: str, least: int) -> None:
    script = CONF_DIR.parent.parent / "experiments" / study / "run.sh"
    axes_of_study = sweep_of(study)
    jobs = []
    for overrides in _runner_sweeps(script):
        given = dict(override.split("=", 1) for override in overrides)
        axes = {**axes_of_study, **{key: value.split(",") for key, value in given.items()}}
        axes = {key: values for key, values in axes.items() if not key.startswith("hydra.")}
        for values in itertools.product(*axes.values()):
            jobs.append([f"experiment={study}", *map("=".join, zip(axes, values, strict=True))])
    assert len(jobs) >= least
    for job in jobs:
        assert problems(compose(job)) == [], job


def test_the_studies_are_those_of_the_experiments_folder() -> None:
    folders = {path.name for path in (CONF_DIR.parent.parent / "experiments").iterdir()}
    assert {"family", "batch_size", "fedavg"} <= set(EXPERIMENTS)
    assert set(EXPERIMENTS) <= folders
