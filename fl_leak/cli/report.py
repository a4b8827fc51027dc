"""``fl-leak-report``: one report of a run or multirun directory.

fl-leak-report multirun/2026-11-24/10-00-00
fl-leak-report experiments/family/runs --out experiments/family/report

Gathers every job's results.jsonl into results.csv (one row per attacked update, with the job's
overrides as columns), summary.csv (means and spreads per setting), failed_jobs.csv,
correlations.csv, rounds.csv, plots of what the sweep varies and a collage of image grids, in
``<dir>/report`` unless ``--out`` says otherwise, with a README.md that explains every file.
Every job that failed or left no records is printed.

Exit codes: 0 when the report was written; 2 for unusable input (a directory that is missing, a
file, or holds no job; an output folder that cannot be written), refused before anything is
written; 1 when writing failed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fl_leak.report.inputs import ReportError, check_paths

if TYPE_CHECKING:
    from fl_leak.report.build import Report

SHOWN = ("jobs", "records", "ok", "errors", "psnr_mean", "psnr_std", "ssim_mean", "audit_index")
PROG = "fl-leak-report"
EPILOG = (
    "Writes README.md beside the tables and plots: what every file, column and plot means. "
    "Exit codes: 0 written; 2 unusable input, refused before anything is written; 1 writing failed."
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n")[0].replace("``", ""), epilog=EPILOG
    )
    parser.add_argument("directory", type=Path, help="a run or multirun output directory")
    parser.add_argument("--out", type=Path, help="where to write (default: <directory>/report)")
    return parser


def show(report: Report) -> str:
    """The console text of a report: counts, failed jobs, the summary, correlations, files."""
    import pandas as pd

    from fl_leak.report.readme import counts_line

    lines = [counts_line(report)]
    for row in report.failed.itertuples():
        lines.append(f"job {row.job} failed or left no results: {row.reason} [{row.overrides}]")
    for job in report.jobs:
        if job.skipped_lines:
            lines.append(
                f"job {job.name}: {job.skipped_lines} line(s) of results.jsonl are not JSON, "
                "left out"
            )
    if not report.summary.empty:
        columns = [column for column in (*report.settings, *SHOWN) if column in report.summary]
        with pd.option_context("display.width", 200, "display.max_columns", None):
            lines.append(
                report.summary[columns].to_string(index=False, float_format="{:.3g}".format)
            )
    for row in report.correlations.itertuples():
        lines.append(
            f"Spearman rank correlation of audit index and PSNR, {row.attack} at batch "
            f"{row.batch_size}: rho {row.rho:.3f} (p {row.p:.3g}, {row.models} models)"
        )
    lines.extend(f"wrote {path}" for path in report.files if path != report.readme)
    skipped = [plot.name for plot in report.plots if plot.path is None]
    if skipped:
        lines.append(f"not drawn (see the README for why): {', '.join(skipped)}")
    if report.readme is not None:
        lines.append(f"what every file, column and plot means: {report.readme}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: 0 when written, 2 for unusable input, 1 when writing failed."""
    arguments = _parser().parse_args(argv)
    directory: Path = arguments.directory
    out: Path = arguments.out or directory / "report"
    try:
        check_paths(directory, out)  # before loading pandas, matplotlib and torch
        from fl_leak.report.build import build_report

        report = build_report(directory, out)
    except ReportError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"{PROG}: cannot write the report into {out}: {error}", file=sys.stderr)
        return 1
    print(show(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
