"""fl-leak-report on multirun directories written here: tables, failed jobs, plots, the README,
the command and the input it refuses."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread, imsave

from fl_leak.cli.report import main as report_main
from fl_leak.records import LeakRecord, write_status
from fl_leak.report.build import ReportError, build_report
from fl_leak.report.jobs import find_jobs
from fl_leak.report.plots import accuracy_figure, numeric_figure, swept_keys

BLANK = {field.name: None for field in fields(LeakRecord)}
FIELDS = {"client": 0, "attack": "linear", "status": "ok", "local_steps": 1, "audit_index": 0}
SCORES = {
    "ssim": 0.9,
    "mse": 1e-4,
    "label_accuracy": 1.0,
    "seconds": 0.5,
    "gradient_relative_error": 1e-7,
}


def record(**values: Any) -> dict[str, Any]:
    """A line of results.jsonl: every field of ``LeakRecord``, ``values`` set."""
    return {**BLANK, **FIELDS, **SCORES, **values}


def write_job(
    root: Path,
    name: str,
    overrides: list[str],
    records: list[dict[str, Any]] | None,
    status: str | None = "ok",
    grid: bool = False,
) -> Path:
    """A job's output directory as ``fl-leak`` writes it."""
    directory = root / name
    (directory / ".hydra").mkdir(parents=True)
    (directory / ".hydra" / "overrides.yaml").write_text(
        "".join(f"- {override}\n" for override in overrides)
    )
    if records is not None:
        lines = "".join(json.dumps(item) + "\n" for item in records)
        (directory / "results.jsonl").write_text(lines)
    if status is not None:
        write_status(directory, status, RuntimeError("boom") if status == "failed" else None)
    if grid:
        imsave(directory / "grid_round_1.png", np.full((20, 30, 3), 0.5))
    return directory


def grid_sweep(root: Path) -> None:
    """2 models x 2 batch sizes, 2 records per job; one setting failed its attack; seeds 0 and 1."""
    audit = {"cnn2_c1": 0, "cnn2_c5": -1470}
    number = 0
    for model in ("cnn2_c1", "cnn2_c5"):
        for batch_size in (1, 2):
            for seed in (0, 1):
                psnr = 100.0 + audit[model] / 100 - 10 * batch_size + seed
                records = [
                    record(
                        round=1,
                        client=client,
                        model=model,
                        batch_size=batch_size,
                        seed=seed,
                        audit_index=audit[model] * batch_size,
                        psnr=psnr + client,
                    )
                    for client in (0, 1)
                ]
                if model == "cnn2_c5" and batch_size == 2:
                    records[1].update(status="error", error="FlLeakError: rank", psnr=None)
                overrides = [f"model={model}", f"fl.batch_size={batch_size}", f"seed={seed}"]
                write_job(root, str(number), overrides, records, grid=True)
                number += 1


def test_one_row_per_record_with_the_overrides_as_typed_columns(tmp_path: Path) -> None:
    grid_sweep(tmp_path)

    report = build_report(tmp_path, tmp_path / "report")

    table = pd.read_csv(tmp_path / "report" / "results.csv")
    assert len(table) == 16 and len(report.jobs) == 8
    assert {"job", "overrides", "fl.batch_size", "model", "psnr", "status", "error"} <= set(
        table.columns
    )
    assert sorted(table["fl.batch_size"].unique()) == [1, 2]
    assert (table["fl.batch_size"] == table["batch_size"]).all()
    assert table["job"].astype(str).tolist() == [str(n) for n in range(8) for _ in (0, 1)]
    failed = table[table["status"] == "error"]
    assert len(failed) == 2 and set(failed["error"]) == {"FlLeakError: rank"}


def test_the_summary_pools_seeds_per_setting_with_means_and_spreads(tmp_path: Path) -> None:
    grid_sweep(tmp_path)

    report = build_report(tmp_path, tmp_path / "report")

    summary = pd.read_csv(tmp_path / "report" / "summary.csv")
    assert report.settings == ["model", "fl.batch_size"]
    assert len(summary) == 4 and set(summary["jobs"]) == {2} and set(summary["records"]) == {4}
    row = summary[(summary["model"] == "cnn2_c1") & (summary["fl.batch_size"] == 1)].iloc[0]
    psnr = [90.0, 91.0, 91.0, 92.0]  # seeds 0, 1 x clients 0, 1
    assert row["psnr_mean"] == pytest.approx(np.mean(psnr))
    assert row["psnr_std"] == pytest.approx(np.std(psnr, ddof=1))
    errors = summary[(summary["model"] == "cnn2_c5") & (summary["fl.batch_size"] == 2)].iloc[0]
    assert (errors["ok"], errors["errors"]) == (2, 2)


def test_failed_unfinished_and_empty_jobs_are_listed_with_the_reason(tmp_path: Path) -> None:
    write_job(tmp_path, "0", ["fl.batch_size=1"], [record(round=1, model="m", batch_size=1)])
    write_job(tmp_path, "1", ["fl.batch_size=1000"], None, status="failed")
    write_job(tmp_path, "2", ["fl.batch_size=2"], [], status="running")
    write_job(tmp_path, "3", ["fl.batch_size=4"], [], status="ok")

    report = build_report(tmp_path, tmp_path / "report")

    failed = pd.read_csv(tmp_path / "report" / "failed_jobs.csv")
    assert failed["job"].tolist() == [1, 2, 3]
    assert failed["reason"].tolist() == [
        "RuntimeError: boom",
        "did not finish (status running)",
        "no records in results.jsonl",
    ]
    assert failed["overrides"].tolist()[0] == "fl.batch_size=1000"
    assert len(report.records) == 1


def test_spearman_correlation_of_audit_index_and_psnr_across_models(tmp_path: Path) -> None:
    audit = {"a": 0, "b": -10, "c": -100, "d": -1000}
    psnr = {"a": 120.0, "b": 60.0, "c": 70.0, "d": 10.0}
    for number, model in enumerate(audit):
        records = [
            record(round=1, model=model, batch_size=1, audit_index=audit[model], psnr=psnr[model])
        ]
        write_job(tmp_path, str(number), [f"model={model}"], records)

    report = build_report(tmp_path, tmp_path / "report")

    row = report.correlations.iloc[0]
    assert (row["attack"], row["batch_size"], row["models"]) == ("linear", 1, 4)
    assert row["rho"] == pytest.approx(0.8)  # ranks 4 2 3 1 against 4 3 2 1
    assert (tmp_path / "report" / "psnr_vs_audit_index.png").exists()


def test_plots_are_drawn_for_the_axes_the_sweep_varies(tmp_path: Path) -> None:
    grid_sweep(tmp_path)

    report = build_report(tmp_path, tmp_path / "report")

    names = {path.name for path in report.files}
    assert {"psnr_vs_batch_size.png", "psnr_vs_audit_index.png", "collage.png"} <= names
    assert "psnr_vs_local_steps.png" not in names  # every job ran one local step
    collage = imread(tmp_path / "report" / "collage.png")
    assert collage.shape[0] > 100 and collage.shape[1] > 100


def test_the_command_prints_every_failed_job_and_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_job(tmp_path, "0", ["model=a"], [record(round=1, model="a", batch_size=1, psnr=50.0)])
    write_job(tmp_path, "1", ["model=b"], None, status="failed")

    code = report_main([str(tmp_path), "--out", str(tmp_path / "out")])

    printed = capsys.readouterr().out
    assert code == 0
    assert "job 1 failed or left no results: RuntimeError: boom [model=b]" in printed
    assert "2 jobs: 1 completed with records, 1 failed or left no records." in printed
    assert "1 record: 1 ok, 0 with status error." in printed
    assert (tmp_path / "out" / "results.csv").exists()
    readme = tmp_path / "out" / "README.md"
    assert printed.splitlines()[-1] == f"what every file, column and plot means: {readme}"


def test_the_console_counts_ok_and_error_records_and_failed_jobs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    grid_sweep(tmp_path)
    write_job(tmp_path, "8", ["model=x", "fl.batch_size=1", "seed=0"], None, status="failed")
    write_job(tmp_path, "9", ["model=y", "fl.batch_size=1", "seed=0"], [], status="running")

    assert report_main([str(tmp_path)]) == 0

    first = capsys.readouterr().out.splitlines()[0]
    assert first == (
        "10 jobs: 8 completed with records, 2 failed or left no records. "
        "16 records: 14 ok, 2 with status error."
    )


def test_a_directory_without_jobs_is_an_error(tmp_path: Path) -> None:
    assert report_main([str(tmp_path)]) == 2
    assert find_jobs(tmp_path) == []
    assert list(tmp_path.iterdir()) == []


def test_a_single_run_directory_is_one_job(tmp_path: Path) -> None:
    run = write_job(tmp_path, "run", [], [record(round=1, model="a", batch_size=1, psnr=40.0)])

    report = build_report(run, run / "report")

    assert [job.name for job in report.jobs] == ["."]
    assert len(report.summary) == 1 and math.isclose(report.summary["psnr_mean"][0], 40.0)


def test_the_rank_correlation_is_undefined_where_the_index_is_constant(tmp_path: Path) -> None:
    for number, model in enumerate(("a", "b", "c")):
        records = [record(round=1, model=model, batch_size=1, psnr=100.0 + number)]
        write_job(tmp_path, str(number), [f"model={model}"], records)

    report = build_report(tmp_path, tmp_path / "report")

    row = report.correlations.iloc[0]
    assert row["models"] == 3 and math.isnan(row["rho"]) and math.isnan(row["p"])


def test_defense_sweeps_get_utility_columns_and_a_privacy_utility_plot(tmp_path: Path) -> None:
    settings = [("none", "", 0.30, 120.0), ("prune", "fraction=0.9", 0.28, 20.0)]
    for number, (defense, options, accuracy, psnr) in enumerate(settings):
        records = [record(round=1, defense=defense, defense_options=options, psnr=psnr)]
        directory = write_job(tmp_path, str(number), [f"defense={defense}"], records)
        (directory / "summary.json").write_text(json.dumps({"test_accuracy": accuracy}))

    report = build_report(tmp_path, tmp_path / "report")

    summary = pd.read_csv(tmp_path / "report" / "summary.csv")
    assert summary.set_index("defense")["test_accuracy"].to_dict() == {"none": 0.30, "prune": 0.28}
    assert summary.set_index("defense")["psnr_mean"].to_dict() == {"none": 120.0, "prune": 20.0}
    names = {path.name for path in report.files}
    assert {"privacy_utility.png", "psnr_by_attack_and_model.png"} <= names  # a row per defense
    assert imread(tmp_path / "report" / "privacy_utility.png").shape[1] > 500


def _tree(root: Path) -> set[Path]:
    return set(root.rglob("*"))


BAD_INPUTS = {
    "missing directory": (lambda t: [str(t / "nowhere")], "no such directory: {t}/nowhere"),
    "a file": (lambda t: [str(t / "jobs" / "0" / "results.jsonl")], "is a file, not a run"),
    "no job": (lambda t: [str(t / "empty")], "no job under {t}/empty"),
    "--out a file": (
        lambda t: [str(t / "jobs"), "--out", str(t / "taken.txt")],
        "--out {t}/taken.txt is a file",
    ),
    "--out under a file": (
        lambda t: [str(t / "jobs"), "--out", str(t / "taken.txt" / "report")],
        "{t}/taken.txt is a file",
    ),
    "--out with a README of its own": (
        lambda t: [str(t / "jobs"), "--out", str(t / "documented")],
        "holds a README.md that fl-leak-report did not write",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_refused_with_one_line_before_anything_is_written(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_job(tmp_path / "jobs", "0", ["model=a"], [record(round=1, model="a", batch_size=1)])
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "taken.txt").write_text("not a folder\n")
    (tmp_path / "documented").mkdir()
    (tmp_path / "documented" / "README.md").write_text("# my notes\n")
    before = _tree(tmp_path)
    arguments, message = BAD_INPUTS[case]

    code = report_main(arguments(tmp_path))

    printed = capsys.readouterr()
    assert code == 2
    assert printed.out == ""
    assert len(printed.err.splitlines()) == 1
    assert printed.err.startswith("fl-leak-report: ")
    assert message.format(t=tmp_path) in printed.err
    assert _tree(tmp_path) == before  # no report folder, no CSV
    assert (tmp_path / "documented" / "README.md").read_text() == "# my notes\n"


def test_the_command_refuses_a_missing_directory_without_a_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "does" / "not" / "exist"
    result = subprocess.run(
        [sys.executable, "-m", "fl_leak.cli.report", str(missing)],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 2
    assert result.stderr == f"fl-leak-report: no such directory: {missing}\n"
    assert result.stdout == ""
    assert not tmp_path.joinpath("does").exists()


def test_build_report_raises_before_writing_when_there_is_no_job(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="no job under"):
        build_report(tmp_path, tmp_path / "report")
    assert not (tmp_path / "report").exists()


def test_a_report_folder_it_wrote_is_rewritten(tmp_path: Path) -> None:
    grid_sweep(tmp_path / "runs")
    build_report(tmp_path / "runs", tmp_path / "report")

    report = build_report(tmp_path / "runs", tmp_path / "report")

    assert report.readme == tmp_path / "report" / "README.md"


def test_a_line_cut_short_by_a_killed_job_is_left_out_and_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = write_job(
        tmp_path, "0", ["model=a"], [record(round=1, model="a", batch_size=1)], status="running"
    )
    with (directory / "results.jsonl").open("a") as handle:
        handle.write('{"round": 2, "cli')

    assert report_main([str(tmp_path)]) == 0

    printed = capsys.readouterr().out
    assert "job 0: 1 line(s) of results.jsonl are not JSON, left out" in printed
    assert "job 0 failed or left no results: did not finish (status running)" in printed


def swept_job(
    root: Path,
    number: int,
    overrides: dict[str, Any],
    fields: dict[str, Any],
    accuracies: list[float] | None = None,
) -> Path:
    """A job with two clients' records; ``accuracies``: its test accuracy after rounds 0, 1..."""
    records = [record(round=1, client=client, **fields) for client in (0, 1)]
    directory = write_job(
        root, str(number), [f"{key}={value}" for key, value in overrides.items()], records
    )
    if accuracies is not None:
        rounds = [
            {"round": index, "test_accuracy": value, "test_loss": 2.0 - value}
            for index, value in enumerate(accuracies)
        ]
        summary = {"test_accuracy": accuracies[-1], "rounds": rounds}
        (directory / "summary.json").write_text(json.dumps(summary))
    return directory


def fedavg_sweep(root: Path) -> None:
    """2 attacks x 2 learning rates x 3 local step counts, one model, three rounds of training."""
    number = 0
    for attack in ("linear", "hybrid"):
        for lr in (0.1, 0.01):
            for steps in (1, 2, 5):
                psnr = 120.0 / steps + (10 if attack == "hybrid" else 0) + 100 * lr
                swept_job(
                    root,
                    number,
                    {"attack": attack, "fl.lr": lr, "fl.local_steps": steps},
                    {
                        "attack": attack,
                        "model": "cnn2_c1",
                        "batch_size": 1,
                        "lr": lr,
                        "local_steps": steps,
                        "psnr": psnr,
                    },
                    accuracies=[0.1, 0.1 + lr, 0.1 + 2 * lr + 0.01 * steps],
                )
                number += 1


def test_plots_follow_what_the_sweep_varies(tmp_path: Path) -> None:
    fedavg_sweep(tmp_path)

    report = build_report(tmp_path, tmp_path / "report")

    drawn = {plot.name for plot in report.plots if plot.path is not None}
    assert drawn == {
        "psnr_by_attack_and_model.png",
        "psnr_vs_lr.png",
        "psnr_vs_local_steps.png",
        "test_accuracy.png",
    }
    assert not (tmp_path / "report" / "psnr_vs_fl.lr.png").exists()  # fl.lr repeats lr
    skipped = {plot.name: plot.reason for plot in report.plots if plot.path is None}
    assert skipped["psnr_vs_batch_size.png"] == "batch_size is the same for every record"
    assert "one model only" in skipped["psnr_vs_audit_index.png"]
    assert "privacy_utility.png" in skipped
    assert "collage.png" in skipped  # no job wrote a grid
    rounds = pd.read_csv(tmp_path / "report" / "rounds.csv")
    assert len(rounds) == 12 * 3 and {"fl.lr", "fl.local_steps", "attack"} <= set(rounds.columns)


def test_psnr_against_a_swept_key_has_one_line_per_attack(tmp_path: Path) -> None:
    fedavg_sweep(tmp_path)
    report = build_report(tmp_path, tmp_path / "report")
    numeric, categorical = swept_keys(report.records, report.settings)
    assert numeric == ["local_steps", "lr"] and categorical == ["attack"]

    figure = numeric_figure(report.records, "lr", numeric, categorical)

    psnr = figure.axes[0]
    legend = psnr.get_legend()
    assert legend is not None
    labels = [text.get_text() for text in legend.get_texts()]
    assert labels == ["attack=hybrid", "attack=linear"]
    assert "pooled over local_steps" in " ".join(figure.get_suptitle().split())
    assert [float(x) for x in psnr.get_xticks()] == [0.01, 0.1]  # log scale, ticks at the values
    assert psnr.get_xscale() == "log"


def test_the_accuracy_plot_has_a_line_per_training_setting_not_per_attack(
    tmp_path: Path,
) -> None:
    fedavg_sweep(tmp_path)
    report = build_report(tmp_path, tmp_path / "report")
    keys = [key for key in report.settings if not key.startswith("attack")]

    figure = accuracy_figure(report.rounds, keys)

    lines = figure.axes[0].get_lines()
    assert len(lines) == 6  # 2 learning rates x 3 step counts; the two attacks share training
    assert all(np.array_equal(np.asarray(line.get_xdata()), [0, 1, 2]) for line in lines)


def test_the_audit_index_plot_needs_an_index_that_differs_between_models(
    tmp_path: Path,
) -> None:
    for number, model in enumerate(("a", "b", "c")):
        records = [record(round=1, model=model, batch_size=1, psnr=100.0 + number)]
        write_job(tmp_path, str(number), [f"model={model}"], records)

    report = build_report(tmp_path, tmp_path / "report")

    names = {path.name for path in report.files}
    assert "psnr_vs_audit_index.png" not in names
    assert "psnr_by_attack_and_model.png" in names
    reason = next(plot.reason for plot in report.plots if plot.name == "psnr_vs_audit_index.png")
    assert reason == "the audit index is the same (0) for every model"
    assert reason in (tmp_path / "report" / "README.md").read_text()


def test_a_single_run_draws_no_single_point_plot(tmp_path: Path) -> None:
    run = write_job(tmp_path, "run", [], [record(round=1, model="a", batch_size=1, psnr=40.0)])

    report = build_report(run, run / "report")

    assert [plot.name for plot in report.plots if plot.path is not None] == []
    assert {path.name for path in report.files} == {
        "results.csv",
        "summary.csv",
        "failed_jobs.csv",
        "correlations.csv",
        "rounds.csv",
        "README.md",
    }


def test_a_defense_strength_gets_its_own_plot_and_the_privacy_utility_plot(
    tmp_path: Path,
) -> None:
    for number, noise in enumerate((0.01, 0.1, 1.0)):
        swept_job(
            tmp_path,
            number,
            {"defense": "dp_sgd", "defense.options.noise_multiplier": noise},
            {
                "model": "m",
                "batch_size": 1,
                "defense": "dp_sgd",
                "defense_options": f"noise_multiplier={noise}",
                "psnr": 30.0 - 10 * noise,
                "num_clients": 2,
            },
            accuracies=[0.1, 0.3 - noise / 10],
        )

    report = build_report(tmp_path, tmp_path / "report")

    drawn = {plot.name for plot in report.plots if plot.path is not None}
    assert {"psnr_vs_defense.options.noise_multiplier.png", "privacy_utility.png"} <= drawn
    assert "test_accuracy.png" in drawn


def test_the_readme_explains_every_file_and_column(tmp_path: Path) -> None:
    grid_sweep(tmp_path)
    write_job(tmp_path, "8", ["model=x", "fl.batch_size=1", "seed=0"], None, status="failed")

    report = build_report(tmp_path, tmp_path / "report")

    readme = (tmp_path / "report" / "README.md").read_text()
    assert report.readme == tmp_path / "report" / "README.md" and report.readme in report.files
    for path in report.files:
        if path.suffix == ".csv":
            assert f"### {path.name}" in readme
            for column in pd.read_csv(path).columns:
                assert f"| `{column}` |" in readme, (path.name, column)
        elif path != report.readme:
            assert f"- `{path.name}`: " in readme
    assert "dB with peak 1" in readme and "fractions from 0 to 1" in readme
    assert "seconds" in readme and "Spearman" in readme
    assert "9 jobs: 8 completed with records, 1 failed or left no records." in readme
    assert "16 records: 14 ok, 2 with status error." in readme
    assert "In this report it is empty: at most 2 model(s)" in readme
    assert "a correlation needs 3 or more" in readme
    assert "- `psnr_vs_local_steps.png` (" in readme  # not drawn, with why


def test_a_plot_an_earlier_report_drew_and_this_one_does_not_is_removed(tmp_path: Path) -> None:
    grid_sweep(tmp_path / "runs")
    build_report(tmp_path / "runs", tmp_path / "report")
    assert (tmp_path / "report" / "psnr_vs_batch_size.png").exists()
    (tmp_path / "report" / "notes.png").write_bytes(b"mine")
    for directory in (tmp_path / "runs").iterdir():
        if directory.name not in ("0", "1", "4", "5"):  # keep batch size 1 only
            shutil.rmtree(directory)

    report = build_report(tmp_path / "runs", tmp_path / "report")

    assert "psnr_vs_batch_size.png" not in {path.name for path in report.files}
    assert not (tmp_path / "report" / "psnr_vs_batch_size.png").exists()
    assert (tmp_path / "report" / "notes.png").read_bytes() == b"mine"  # not the report's
    assert (tmp_path / "report" / "psnr_by_attack_and_model.png").exists()
