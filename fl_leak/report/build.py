"""``fl-leak-report``'s work: from a run or multirun directory to CSV tables, plots and a collage.

Writes into ``out``: ``results.csv`` (one row per record of every job), ``summary.csv`` (means
and spreads per setting), ``failed_jobs.csv`` (every job that failed, did not finish or left no
records, with the reason; only the header when none), ``correlations.csv`` (Spearman's rank
correlation of audit index and PSNR across architectures, where three or more were run),
``rounds.csv`` (each job's test accuracy per round), the plots of :mod:`fl_leak.report.plots`,
``collage.png`` and ``README.md``, which explains every file, column and plot. A plot that the
README of an earlier report into ``out`` lists, and this report does not draw, is removed.

Bad input is refused before anything is written (:class:`ReportError`, naming the path): a
directory that does not exist, is a file, or holds no job; an output folder that is a file, lies
under a file, cannot be written, or holds a README.md that ``fl-leak-report`` did not write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fl_leak.report import inputs
from fl_leak.report.collage import MAX_TILES, save_collage
from fl_leak.report.collect import (
    NOT_A_SETTING,
    failed_jobs,
    rank_correlations,
    records_table,
    rounds_table,
    setting_columns,
    summary_table,
)
from fl_leak.report.inputs import README_FILE, ReportError
from fl_leak.report.jobs import Job, find_jobs
from fl_leak.report.plots import PlotOutcome, draw_plots
from fl_leak.report.readme import listed_plots, write_readme

COLLAGE_FILE = "collage.png"
__all__ = ["Report", "ReportError", "build_report", "check_paths"]
TABLES = ("results.csv", "summary.csv", "failed_jobs.csv", "correlations.csv", "rounds.csv")


@dataclass
class Report:
    """The tables of a report and the paths of everything it wrote."""

    jobs: list[Job]
    records: pd.DataFrame
    summary: pd.DataFrame
    failed: pd.DataFrame
    correlations: pd.DataFrame
    settings: list[str]
    files: list[Path] = field(default_factory=list)
    rounds: pd.DataFrame = field(default_factory=pd.DataFrame)
    plots: list[PlotOutcome] = field(default_factory=list)
    readme: Path | None = None


def _title(job: Job) -> str:
    shown = [
        f"{key}={value}" for key, value in job.settings.items() if not key.startswith(NOT_A_SETTING)
    ]
    return f"{job.name}: " + " ".join(shown) if shown else job.name


def check_paths(root: Path, out: Path) -> list[Job]:
    """Check ``root`` and ``out`` and return the jobs under ``root``; :class:`ReportError`
    when no report can be made (nothing is written)."""
    inputs.check_paths(root, out)
    jobs = find_jobs(root)
    if not jobs:
        raise inputs.no_job(root)
    return jobs


def build_report(root: Path, out: Path) -> Report:
    """Collect every job under ``root`` and write the report's files into ``out``.

    Raises :class:`ReportError`, before writing anything, when the paths are unusable or
    ``root`` holds no job.
    """
    root, out = Path(root), Path(out)
    jobs = check_paths(root, out)
    records = records_table(jobs)
    settings = setting_columns(jobs, records)
    report = Report(
        jobs=jobs,
        records=records,
        summary=summary_table(records, settings),
        failed=failed_jobs(jobs),
        correlations=rank_correlations(records),
        settings=settings,
        rounds=rounds_table(jobs),
    )
    earlier = listed_plots(out / README_FILE)
    out.mkdir(parents=True, exist_ok=True)
    tables = dict(
        zip(
            TABLES,
            (report.records, report.summary, report.failed, report.correlations, report.rounds),
            strict=True,
        )
    )
    for name, table in tables.items():
        table.to_csv(out / name, index=False)
        report.files.append(out / name)
    report.plots = draw_plots(records, out, report.rounds, settings)
    collage = save_collage(jobs, out / COLLAGE_FILE, {job.name: _title(job) for job in jobs})
    about = (
        "each job's image grid of its last attacked round (originals above reconstructions, "
        f"PSNR under each), titled by the job's settings; the first {MAX_TILES} jobs"
    )
    report.plots.append(
        PlotOutcome(COLLAGE_FILE, about, collage, "" if collage else "no job wrote an image grid")
    )
    report.files.extend(plot.path for plot in report.plots if plot.path is not None)
    for name in earlier - {path.name for path in report.files}:
        (out / name).unlink(missing_ok=True)  # drawn by an earlier report, not by this one
    report.readme = write_readme(report, root, out, report.plots)
    report.files.append(report.readme)
    return report
