"""The jobs of a run or multirun directory: where they are, what they were given, how they ended.

Every ``fl-leak`` job writes ``status.json`` in its output directory (``running`` when it starts,
then ``ok``, ``partial`` (some updates failed: their records say why), ``failed`` or
``interrupted``, with the error or the reason), beside Hydra's ``.hydra/overrides.yaml``; a job
without one (written before it existed) counts as finished when it wrote ``summary.json``. A job is
any directory under the root that holds ``.hydra/overrides.yaml``; one that failed, never finished
or left no records is kept with the reason, never dropped. A line of ``results.jsonl`` that is not
JSON (a job killed while writing it) is skipped and counted; a ``status.json``, ``summary.json`` or
overrides file that cannot be read makes the job ``unreadable``, with the reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser

from fl_leak.records import RESULTS_FILE, STATUS_FILE, SUMMARY_FILE
from fl_leak.report.inputs import OVERRIDES_FILE

__all__ = ["OVERRIDES_FILE", "Job", "find_jobs", "load_job"]


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
    skipped_lines: int = 0

    @property
    def failure(self) -> str | None:
        """Why the job counts as failed (``None`` when it completed with records)."""
        if self.status in ("failed", "unreadable"):
            return self.error or self.status
        if self.status not in ("ok", "partial"):
            return f"did not finish (status {self.status})"
        if not self.records:
            return f"no records in {RESULTS_FILE}"
        return None

    @property
    def settings(self) -> dict[str, Any]:
        """The job's overrides as ``key -> value``, values typed as Hydra parses them."""
        parsed = OverridesParser.create().parse_overrides(self.overrides)
        return {override.key_or_group: override.value() for override in parsed}


def _read_records(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The records of ``path`` (none when it is missing) and how many lines were not JSON."""
    if not path.exists():
        return [], 0
    records, skipped = [], 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            skipped += 1
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            skipped += 1
    return records, skipped


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def load_job(directory: Path, root: Path) -> Job:
    """The job whose output directory is ``directory`` (a multirun's subfolder, or a run)."""
    name = directory.relative_to(root).as_posix() if directory != root else "."
    try:
        overrides = yaml.safe_load((directory / OVERRIDES_FILE).read_text()) or []
        if not isinstance(overrides, list):
            raise ValueError(f"{OVERRIDES_FILE} is not a list of overrides")
        status = _read_json(directory / STATUS_FILE) or {}
        if not isinstance(status, dict):
            raise ValueError(f"{STATUS_FILE} is not a JSON object")
        summary = _read_json(directory / SUMMARY_FILE)
        records, skipped = _read_records(directory / RESULTS_FILE)
    except (OSError, ValueError, yaml.YAMLError) as error:
        return Job(name, directory, [], [], "unreadable", f"{type(error).__name__}: {error}", None)
    return Job(
        name=name,
        directory=directory,
        overrides=[str(override) for override in overrides],
        records=records,
        status=status.get("status", "ok" if summary is not None else "unknown"),
        error=status.get("error") or status.get("reason"),
        summary=summary if isinstance(summary, dict) else None,
        skipped_lines=skipped,
    )


def _job_order(directory: Path) -> tuple[Any, ...]:
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in directory.parts)


def find_jobs(root: Path) -> list[Job]:
    """Every job under ``root`` (``root`` itself for a single run), in job-number order."""
    root = Path(root)
    directories = {path.parent.parent for path in root.rglob(OVERRIDES_FILE.as_posix())}
    return [load_job(directory, root) for directory in sorted(directories, key=_job_order)]
