"""``fl-leak-report``'s work: from a run or multirun directory to CSV tables, plots and a collage.

Writes into ``out``: ``results.csv`` (one row per record of every job), ``summary.csv`` (means
and spreads per setting), ``failed_jobs.csv`` (every job that failed, did not finish or left no
records, with the reason; only the header when none), ``correlations.csv`` (Spearman's rank
correlation of audit index and PSNR across architectures, where three or more were run), the
plots of :mod:`fl_leak.report.plots` and ``collage.png``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fl_leak.report.collage import save_collage
from fl_leak.report.collect import (
    NOT_A_SETTING,
    failed_jobs,
    rank_correlations,
    records_table,
    setting_columns,
    summary_table,
)
from fl_leak.report.jobs import Job, find_jobs
from fl_leak.report.plots import save_plots

COLLAGE_FILE = "collage.png"


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


def _title(job: Job) -> str:
    shown = [
        f"{key}={value}" for key, value in job.settings.items() if not key.startswith(NOT_A_SETTING)
    ]
    return f"{job.name}: " + " ".join(shown) if shown else job.name


def build_report(root: Path, out: Path) -> Report:
    """Collect every job under ``root`` and write the report's files into ``out``."""
    jobs = find_jobs(root)
    records = records_table(jobs)
    settings = setting_columns(jobs, records)
    report = Report(
        jobs=jobs,
        records=records,
        summary=summary_table(records, settings),
        failed=failed_jobs(jobs),
        correlations=rank_correlations(records),
        settings=settings,
    )
    out.mkdir(parents=True, exist_ok=True)
    tables = {
        "results.csv": report.records,
        "summary.csv": report.summary,
        "failed_jobs.csv": report.failed,
        "correlations.csv": report.correlations,
    }
    for name, table in tables.items():
        table.to_csv(out / name, index=False)
        report.files.append(out / name)
    report.files.extend(save_plots(records, out))
    collage = save_collage(jobs, out / COLLAGE_FILE, {job.name: _title(job) for job in jobs})
    if collage is not None:
        report.files.append(collage)
    return report
