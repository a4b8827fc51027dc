"""fl-leak-report on multirun directories written here: tables, failed jobs, plots, the command."""

from __future__ import annotations

import json
import math
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread, imsave

from fl_leak.cli.report import main as report_main
from fl_leak.records import LeakRecord, write_status
from fl_leak.report.build import build_report
from fl_leak.report.jobs import find_jobs

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
    assert "2 jobs, 1 records (0 with status error)" in printed
    assert (tmp_path / "out" / "results.csv").exists()


def test_a_directory_without_jobs_is_an_error(tmp_path: Path) -> None:
    assert report_main([str(tmp_path)]) == 1
    assert find_jobs(tmp_path) == []


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
    assert "privacy_utility.png" in {path.name for path in report.files}
    assert imread(tmp_path / "report" / "privacy_utility.png").shape[1] > 500
