"""The jobs of a run or multirun directory: where they are, what they were given, how they ended.

Every ``fl-leak`` job writes ``status.json`` in its output directory (``running`` when it starts,
then ``ok`` or ``failed`` with the error), beside Hydra's ``.hydra/overrides.yaml``; a job without
one (written before it existed) counts as finished when it wrote ``summary.json``. A job is any
directory under the root that holds ``.hydra/overrides.yaml``; one that failed, never finished or
left no records is kept with the reason, never dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser

from fl_leak.records import RESULTS_FILE, STATUS_FILE, SUMMARY_FILE

OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"


@dataclass
class Job:
    """One job's output directory, its overrides, and its records (empty when it left none)."""

    name: str
    directory: Path
    overrides: list[str]
    records: list[dict[str, Any]]
    status: str
    error: str | None
    summary: dict[str, Any] | None

    @property
    def failure(self) -> str | None:
        """Why the job counts as failed (``None`` when it completed with records)."""
        if self.status == "failed":
            return self.error or "failed"
        if self.status != "ok":
            return f"did not finish (status {self.status})"
        if not self.records:
            return f"no records in {RESULTS_FILE}"
        return None

    @property
    def settings(self) -> dict[str, Any]:
        """The job's overrides as ``key -> value``, values typed as Hydra parses them."""
        parsed = OverridesParser.create().parse_overrides(self.overrides)
        return {override.key_or_group: override.value() for override in parsed}


def _read_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_job(directory: Path, root: Path) -> Job:
    """The job whose output directory is ``directory`` (a multirun's subfolder, or a run)."""
    overrides = yaml.safe_load((directory / OVERRIDES_FILE).read_text()) or []
    status_path = directory / STATUS_FILE
    status = json.loads(status_path.read_text()) if status_path.exists() else {}
    summary_path = directory / SUMMARY_FILE
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    name = directory.relative_to(root).as_posix() if directory != root else "."
    return Job(
        name=name,
        directory=directory,
        overrides=[str(override) for override in overrides],
        records=_read_records(directory / RESULTS_FILE),
        status=status.get("status", "ok" if summary is not None else "unknown"),
        error=status.get("error"),
        summary=summary,
    )


def _job_order(directory: Path) -> tuple[Any, ...]:
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in directory.parts)


def find_jobs(root: Path) -> list[Job]:
    """Every job under ``root`` (``root`` itself for a single run), in job-number order."""
    root = Path(root)
    directories = {path.parent.parent for path in root.rglob(OVERRIDES_FILE.as_posix())}
    return [load_job(directory, root) for directory in sorted(directories, key=_job_order)]
