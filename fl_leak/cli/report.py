"""``fl-leak-report``: one report of a run or multirun directory.

fl-leak-report multirun/2026-11-24/10-00-00
fl-leak-report experiments/family/runs --out experiments/family

Gathers every job's results.jsonl into results.csv (one row per attacked update, with the job's
overrides as columns), summary.csv (means and spreads per setting), failed_jobs.csv,
correlations.csv, plots and a collage of image grids, in ``<dir>/report`` unless ``--out`` says
otherwise. Every job that failed or left no records is printed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from fl_leak.report.build import Report, build_report

SHOWN = ("jobs", "records", "ok", "errors", "psnr_mean", "psnr_std", "ssim_mean", "audit_index")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fl-leak-report", description=__doc__.split("\n")[0])
    parser.add_argument("directory", type=Path, help="a run or multirun output directory")
    parser.add_argument("--out", type=Path, help="where to write (default: <directory>/report)")
    return parser


def show(report: Report) -> str:
    """The console text of a report: counts, failed jobs, the summary, correlations, files."""
    records = report.records
    errors = int((records["status"] != "ok").sum()) if not records.empty else 0
    lines = [f"{len(report.jobs)} jobs, {len(records)} records ({errors} with status error)"]
    for row in report.failed.itertuples():
        lines.append(f"job {row.job} failed or left no results: {row.reason} [{row.overrides}]")
    if not report.summary.empty:
        columns = [*report.settings, *SHOWN]
        with pd.option_context("display.width", 200, "display.max_columns", None):
            lines.append(
                report.summary[columns].to_string(index=False, float_format="{:.3g}".format)
            )
    for row in report.correlations.itertuples():
        lines.append(
            f"Spearman rank correlation of audit index and PSNR, {row.attack} at batch "
            f"{row.batch_size}: rho {row.rho:.3f} (p {row.p:.3g}, {row.models} models)"
        )
    lines.extend(f"wrote {path}" for path in report.files)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; exit code 1 when the directory holds no job at all."""
    arguments = _parser().parse_args(argv)
    report = build_report(arguments.directory, arguments.out or arguments.directory / "report")
    print(show(report))
    if not report.jobs:
        print(f"fl-leak-report: no job under {arguments.directory}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
