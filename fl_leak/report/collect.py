"""Tables of a run or multirun: every record, means and spreads per setting, failed jobs.

One row of :func:`records_table` is one record of a job's ``results.jsonl`` (an attacked update,
or a failure in place of one), with the job's name, its overrides (one column per key, values
parsed as YAML) and whether it replayed a capture. A setting is a job's overrides less its seed,
so :func:`summary_table` pools the seeds of a setting. PSNR is null where the reconstruction is
exact (an infinite PSNR); such records count in ``ok`` but not in the PSNR columns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
from scipy.stats import spearmanr

from fl_leak.records import SCORES
from fl_leak.report.jobs import Job

NOT_A_SETTING = ("seed", "hydra", "capture.")  # override keys that do not tell settings apart
FAILED_COLUMNS = ("job", "overrides", "reason")


def _override_columns(job: Job, record_keys: set[str]) -> dict[str, object]:
    return {key: value for key, value in job.settings.items() if key not in record_keys}


def records_table(jobs: Sequence[Job]) -> pd.DataFrame:
    """One row per record of every job: job columns, override columns, then the record.

    ``test_accuracy`` is the job's utility: its global model's final test accuracy.
    """
    rows = []
    for job in jobs:
        summary = job.summary or {}
        replayed = summary.get("capture", {}).get("replayed")
        for record in job.records:
            rows.append(
                {
                    "job": job.name,
                    "overrides": " ".join(job.overrides),
                    "replayed": replayed,
                    "test_accuracy": summary.get("test_accuracy"),
                    **_override_columns(job, set(record)),
                    **record,
                }
            )
    return pd.DataFrame(rows)


def setting_columns(jobs: Sequence[Job], table: pd.DataFrame) -> list[str]:
    """The columns that tell the jobs' settings apart: override keys whose values vary.

    Seeds, ``hydra`` and ``capture`` keys are left out.
    """
    keys = dict.fromkeys(key for job in jobs for key in job.settings)
    return [
        key
        for key in keys
        if not key.startswith(NOT_A_SETTING)
        and key in table.columns
        and table[key].astype(str).nunique() > 1
    ]


def summary_table(table: pd.DataFrame, settings: Sequence[str]) -> pd.DataFrame:
    """Per setting: jobs, records, ok and errors, mean and std of every score, the audit index."""
    if table.empty:
        return pd.DataFrame()
    aggregations: dict[str, tuple[str, str]] = {
        "jobs": ("job", "nunique"),
        "records": ("status", "size"),
        "ok": ("ok", "sum"),
        "errors": ("errors", "sum"),
    }
    for score in SCORES:
        aggregations[f"{score}_mean"] = (score, "mean")
        aggregations[f"{score}_std"] = (score, "std")
    aggregations["psnr_median"] = ("psnr", "median")
    aggregations["test_accuracy"] = ("test_accuracy", "mean")
    aggregations["audit_index"] = ("audit_index", "mean")
    frame = table.assign(ok=table["status"] == "ok", errors=table["status"] != "ok").astype(
        {score: float for score in (*SCORES, "audit_index", "test_accuracy")}
    )
    keys = list(settings) or (lambda _: "all")
    summary = frame.groupby(keys, dropna=False, sort=True).agg(**aggregations)
    return summary.reset_index(drop=not settings)


def failed_jobs(jobs: Sequence[Job]) -> pd.DataFrame:
    """The jobs that failed, did not finish, or left no records, with the reason."""
    rows = [
        {"job": job.name, "overrides": " ".join(job.overrides), "reason": job.failure}
        for job in jobs
        if job.failure is not None
    ]
    return pd.DataFrame(rows, columns=list(FAILED_COLUMNS))


def model_means(table: pd.DataFrame) -> pd.DataFrame:
    """Mean PSNR and audit index per (attack, batch size, model), over successful records."""
    ok = table[table["status"] == "ok"].astype({"psnr": float, "audit_index": float})
    keys = ["attack", "batch_size", "model"]
    return ok.groupby(keys, sort=True)[["psnr", "audit_index"]].mean().reset_index()


def rank_correlations(table: pd.DataFrame) -> pd.DataFrame:
    """Spearman's rank correlation of the audit index and the mean PSNR across models.

    One row per (attack, batch size) with at least three models that have both: ``rho`` (NaN
    when either side is constant), its ``p`` value and the number of models.
    """
    columns = ["attack", "batch_size", "models", "rho", "p"]
    if table.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    means = model_means(table).dropna(subset=["psnr", "audit_index"])
    for (attack, batch_size), group in means.groupby(["attack", "batch_size"], sort=True):
        if len(group) < 3:
            continue
        if group["audit_index"].nunique() < 2 or group["psnr"].nunique() < 2:
            rows.append([attack, batch_size, len(group), math.nan, math.nan])
            continue
        result = spearmanr(group["audit_index"], group["psnr"])
        rows.append([attack, batch_size, len(group), float(result.statistic), float(result.pvalue)])
    return pd.DataFrame(rows, columns=columns)


ROUND_COLUMNS = ("job", "overrides", "round", "test_accuracy", "test_loss")


def rounds_table(jobs: Sequence[Job]) -> pd.DataFrame:
    """One row per round of every job's ``summary.json`` ``rounds`` list: the job, its
    overrides (one column per key), then the round's figures (round 0: the initial model)."""
    rows = []
    for job in jobs:
        entries = (job.summary or {}).get("rounds") or []
        for entry in entries:
            if isinstance(entry, dict) and "round" in entry:
                rows.append(
                    {
                        "job": job.name,
                        "overrides": " ".join(job.overrides),
                        **{key: value for key, value in job.settings.items() if key not in entry},
                        **entry,
                    }
                )
    if not rows:
        return pd.DataFrame(columns=list(ROUND_COLUMNS))
    table = pd.DataFrame(rows)
    first = [column for column in ROUND_COLUMNS if column in table.columns]
    settings = [column for column in table.columns if column not in first and column in _keys(jobs)]
    rest = [column for column in table.columns if column not in first and column not in settings]
    return table[[*first[:2], *settings, *first[2:], *rest]]


def _keys(jobs: Sequence[Job]) -> set[str]:
    return {key for job in jobs for key in job.settings}
