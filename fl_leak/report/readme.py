"""The report's ``README.md``: every file the report wrote, what one row is, every column with its
unit, and every plot with what it shows (and the plots not drawn, with why).

The file starts with :data:`~fl_leak.report.inputs.MARK`; ``fl-leak-report`` rewrites a README
that starts with it and refuses to write over any other.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from fl_leak.records import SCORES
from fl_leak.report.inputs import MARK, README_FILE, is_ours
from fl_leak.report.plots import PlotOutcome

if TYPE_CHECKING:
    from fl_leak.report.build import Report

PLOT_LINE = re.compile(r"^- `([A-Za-z0-9._-]+\.png)`: ")

PSNR = (
    "peak signal-to-noise ratio in dB, `10 log10(1 / MSE)` with pixels in [0, 1] (peak 1), "
    "the mean over the batch's images, each matched to its reconstruction; higher means a "
    "closer reconstruction. Empty when the reconstruction is exact (an infinite PSNR) or the "
    "record is an error"
)
AUDIT = (
    "the security audit's index of the initial model at the run's batch size (Chen & Campbell): "
    "0 when every layer below the last is uniquely solvable from the update, negative "
    "otherwise: minus the undetermined unknowns, weighted toward the input (more negative: "
    "less exposed). Unitless; empty when the audit was off"
)
SCORE_UNITS = {
    "psnr": "dB",
    "ssim": "unitless, at most 1",
    "mse": "pixels in [0, 1]",
    "label_accuracy": "fraction, 0 to 1",
    "seconds": "s",
    "gradient_relative_error": "unitless",
}

RECORD_COLUMNS = {
    "job": "the job's folder, relative to the reported directory (`.` for a single run)",
    "overrides": "the job's command-line overrides, separated by spaces",
    "replayed": "`True` when the job replayed a saved capture of the simulation instead of "
    "running Flower; empty when its summary.json does not say",
    "test_accuracy": "the global model's test accuracy after the job's last round (fraction of "
    "the test set classified correctly, 0 to 1), from its summary.json; empty when not "
    "evaluated",
    "round": "the FL round of the attacked update (1: the first)",
    "client": "the client whose update was attacked (its partition number); empty for an "
    "aggregate of several clients",
    "attack": "the attack",
    "model": "the network",
    "data": "the data set",
    "batch_size": "samples per local batch (`fl.batch_size`)",
    "defense": "the clients' defense (`none`: no defense)",
    "defense_options": "the defense's strength: `key=value` pairs separated by commas",
    "num_clients": "clients in the federation",
    "rounds": "FL rounds the job ran",
    "local_steps": "local optimiser steps per round",
    "local_epochs": "local epochs per round (0: `local_steps` counts instead)",
    "local_data": "what each local step trains on (`batch`: one batch; `partition`: the "
    "client's whole partition)",
    "lr": "the clients' learning rate",
    "partition": "how the data is split between clients",
    "alpha": "Dirichlet concentration of a non-IID partition",
    "fraction_train": "fraction of the clients sampled each round",
    "dtype": "floating-point type of training and attack",
    "seed": "the job's seed",
    "audit_index": AUDIT,
    "status": "`ok`, or `error` when the client or the attack failed on this update",
    "stage": "where an error happened: `client` (the client raised) or `attack` (the gradient "
    "estimate, the attack or its scoring raised)",
    "error": "the error's type and message",
    "psnr": PSNR,
    "ssim": "structural similarity (Wang et al. 2004), mean over the batch's matched pairs; "
    "1 for identical images, unitless",
    "mse": "mean squared error per pixel, pixels in [0, 1] (unitless)",
    "label_accuracy": "fraction (0 to 1) of the batch's true labels found among the recovered "
    "ones, compared as multisets",
    "labels_recovered": "`True` when the attack recovered the labels from the update itself",
    "seconds": "wall-clock seconds the attack took on this update",
    "steps": "the local steps the server's gradient estimate divided the update by",
    "gradient_relative_error": "relative error (norm of estimate minus truth over norm of the "
    "truth; unitless) of the "
    "server's gradient estimate against the true gradient of the client's first local step",
    "epsilon": "the DP-SGD accountant's epsilon the client reported after its steps so far "
    "(`defense=dp_sgd` only; unitless)",
    "aggregated_clients": "set when the attacked update is the sum of that many clients' "
    "updates (secure aggregation; `client` is then empty)",
}
ROUND_COLUMNS = {
    "round": "the round after which the figures were taken (0: the initial model)",
    "test_accuracy": "the global model's accuracy on the test set (fraction, 0 to 1)",
    "test_loss": "the global model's mean cross-entropy loss on the test set (nats)",
    "clients_accuracy": "the global model's accuracy on the clients' own partitions (fraction, "
    "weighted mean over clients)",
    "clients_loss": "the global model's loss on the clients' partitions (nats)",
    "records": "updates attacked in this round",
    "ok": "of those, attacked without error",
    "mean_psnr": "mean PSNR of those (dB, peak 1)",
}
FAILED_COLUMNS = {
    "job": "the job's folder",
    "overrides": "its command-line overrides",
    "reason": "why it counts as failed: the error from its status.json, `did not finish "
    "(status running)` for a job killed before it ended, `no records in results.jsonl`, or "
    "why its files could not be read",
}
CORRELATION_COLUMNS = {
    "attack": "the attack",
    "batch_size": "the batch size",
    "models": "models with both a mean PSNR and an audit index at this attack and batch size",
    "rho": "Spearman's rank correlation (-1 to 1) of the audit index and the mean PSNR across "
    "those models; positive: the models closer to index 0 leak more. Empty when the index or "
    "the PSNR is the same for every model",
    "p": "two-sided p value of rho against no correlation (scipy); coarse with few models",
}


def _override(column: str) -> str:
    return f"the job's override `{column}`, as Hydra parses it (empty for jobs that do not set it)"


def _columns(table: pd.DataFrame, known: dict[str, str], fallback: str) -> list[str]:
    lines = ["| column | meaning |", "|---|---|"]
    for column in table.columns:
        meaning = known.get(str(column)) or (fallback.format(column=column))
        lines.append(f"| `{_cell(str(column))}` | {_cell(meaning)} |")
    return lines


def _cell(text: str) -> str:
    """``text`` in a cell of a Markdown table: pipes escaped, no line breaks."""
    return text.replace("|", "\\|").replace("\n", " ")


def _summary_known(settings: Sequence[str]) -> dict[str, str]:
    known = {
        "jobs": "jobs of this setting (seeds pooled)",
        "records": "their records",
        "ok": "records attacked without error",
        "errors": "records with status error",
        "psnr_median": "median PSNR over the successful records (dB, peak 1)",
        "test_accuracy": "mean of the jobs' final test accuracy (fraction, 0 to 1)",
        "audit_index": "mean audit index of the setting's records (unitless; see results.csv)",
    }
    for score in SCORES:
        unit = SCORE_UNITS.get(score, "as in results.csv")
        known[f"{score}_mean"] = (
            f"mean `{score}` over the successful records ({unit}); errors and empty values left out"
        )
        known[f"{score}_std"] = (
            f"sample standard deviation of `{score}` ({unit}); empty with a single value"
        )
    for setting in settings:
        known[setting] = f"{_override(setting)}: a setting; one row per combination"
    return known


def _correlations_note(report: Report) -> str:
    if not report.correlations.empty:
        return ""
    records = report.records
    if records.empty or "audit_index" not in records or records["audit_index"].isna().all():
        why = "no record has an audit index (`audit.enabled=false`, or every attack failed)"
    else:
        means = records[records["status"] == "ok"].dropna(subset=["psnr", "audit_index"])
        counts = means.groupby(["attack", "batch_size"])["model"].nunique()
        most = int(counts.max()) if not counts.empty else 0
        why = (
            f"at most {most} model(s) with both a PSNR and an audit index per attack and "
            "batch size; a correlation needs 3 or more"
        )
    return f"In this report it is empty: {why}."


def _bullets(items: dict[str, str]) -> list[str]:
    return [f"- `{name}`: {text}" for name, text in items.items()]


def readme_text(report: Report, root: Path, plots: Sequence[PlotOutcome]) -> str:
    """The text of the report's README."""
    records = report.records
    ok = int((records["status"] == "ok").sum()) if not records.empty else 0
    lines = [
        MARK,
        f"# Report of `{root}`",
        "",
        counts_line(report),
        "",
        "Written by `fl-leak-report`, which gathers every job (a folder holding "
        "`.hydra/overrides.yaml`) under the directory. Run it again to refresh this folder: a plot "
        "an earlier report drew here and this one does not is removed.",
        "",
        "PSNR is in dB with peak 1 (pixels in [0, 1]); SSIM is unitless (1: identical); label "
        "accuracy and test accuracy are fractions from 0 to 1; times are in seconds. The audit "
        "index is 0 for a model whose every layer the update determines uniquely, and negative "
        "(minus the undetermined unknowns, weighted toward the input) otherwise.",
        "",
        "## Tables",
        "",
        "### results.csv",
        "",
        f"One row per record of a job's results.jsonl: an attacked update, or an error in place "
        f"of one ({len(records)} rows, {ok} ok). Columns:",
        "",
        *_columns(records, RECORD_COLUMNS, _override("{column}")),
        "",
        "### summary.csv",
        "",
        "One row per setting: a combination of the overrides that vary between jobs, seeds "
        "pooled (a single row when none varies). Means and spreads are over the setting's "
        "successful records. Columns:",
        "",
        *_columns(report.summary, _summary_known(report.settings), "as in results.csv"),
        "",
        "### failed_jobs.csv",
        "",
        "One row per job that failed, did not finish, or left no records; only the header when "
        f"every job completed ({len(report.failed)} rows here). Columns:",
        "",
        *_columns(report.failed, FAILED_COLUMNS, "as in results.csv"),
        "",
        "### correlations.csv",
        "",
        "One row per attack and batch size at which 3 or more models have both a mean PSNR (over "
        "successful records) and an audit index: does a model's audit index rank the models by "
        "how much they leak? With fewer than 3 such models no row is written, so the table is "
        "only its header for a sweep of one or two models, or without the audit. "
        + _correlations_note(report),
        "",
        *_columns(report.correlations, CORRELATION_COLUMNS, "as in results.csv"),
        "",
        "### rounds.csv",
        "",
        "One row per round of each job's summary.json (`rounds`): the global model's test "
        "accuracy and loss after the round and the round's attack counts. Only the header when "
        "no job wrote a summary.json. Columns:",
        "",
        *_columns(
            report.rounds,
            {
                **{key: "as in results.csv" for key in ("job", "overrides")},
                **{key: _override(key) for job in report.jobs for key in job.settings},
                **ROUND_COLUMNS,
            },
            "`{column}` as the job's summary.json gives it (`..._seconds`: seconds that part of "
            "the round took)",
        ),
        "",
        "## Plots",
        "",
    ]
    drawn = [plot for plot in plots if plot.path is not None]
    lines.extend(f"- `{plot.name}`: {plot.about}." for plot in drawn)
    if not drawn:
        lines.append("No plot: nothing varies that a plot could show.")
    skipped = [plot for plot in plots if plot.path is None]
    if skipped:
        lines.extend(["", "Not drawn:", ""])
        lines.extend(f"- `{plot.name}` ({plot.about}): {plot.reason}." for plot in skipped)
    lines.append("")
    return "\n".join(lines)


def counts_line(report: Report) -> str:
    """Jobs and records in one sentence: completed and failed jobs, ok and error records."""
    records = report.records
    ok = int((records["status"] == "ok").sum()) if not records.empty else 0
    failed = len(report.failed)
    return (
        f"{_count(len(report.jobs), 'job')}: {len(report.jobs) - failed} completed with records, "
        f"{failed} failed or left no records. {_count(len(records), 'record')}: {ok} ok, "
        f"{len(records) - ok} with status error."
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def listed_plots(path: Path) -> set[str]:
    """The plots (``.png`` files of its folder) a README that ``fl-leak-report`` wrote lists as
    drawn; empty for any other file."""
    if not is_ours(path):
        return set()
    names = (PLOT_LINE.match(line) for line in path.read_text().splitlines())
    return {match[1] for match in names if match is not None}


def write_readme(report: Report, root: Path, out: Path, plots: Sequence[PlotOutcome]) -> Path:
    """Write the report's README into ``out``; return its path."""
    path = out / README_FILE
    path.write_text(readme_text(report, root, plots))
    return path
