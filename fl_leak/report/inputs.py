"""What ``fl-leak-report`` refuses before writing anything, checked without loading the heavy
libraries: a directory that is missing, a file, unreadable or without a job; an output folder
that is a file, lies under a file, cannot be written, or holds a README.md of someone else's."""

from __future__ import annotations

import os
from pathlib import Path

OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"  # marks a job's output directory
README_FILE = "README.md"
MARK = "<!-- written by fl-leak-report; rewritten by every report into this folder -->"


class ReportError(ValueError):
    """Input no report can be made of; the message names the path."""


def is_ours(path: Path) -> bool:
    """Whether ``path`` is a README that ``fl-leak-report`` wrote (it starts with ``MARK``)."""
    try:
        with path.open() as handle:
            return handle.readline().rstrip("\n") == MARK
    except (OSError, UnicodeDecodeError):
        return False


def check_directory(root: Path) -> None:
    """Refuse a ``root`` that is missing, a file, or unreadable."""
    if not root.exists():
        raise ReportError(f"no such directory: {root}")
    if not root.is_dir():
        raise ReportError(f"{root} is a file, not a run or multirun directory")
    if not os.access(root, os.R_OK | os.X_OK):
        raise ReportError(f"cannot read {root}: permission denied")


def check_output(out: Path) -> None:
    """Refuse an output folder that cannot hold the report (nothing is created here)."""
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {out} is a file, not a folder")
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ReportError(f"--out {out} cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ReportError(f"--out {out} cannot be written: {existing} is not writable")
    readme = out / README_FILE
    if readme.exists() and not is_ours(readme):
        raise ReportError(
            f"--out {out} holds a {README_FILE} that fl-leak-report did not write; "
            "choose another folder"
        )


def no_job(root: Path) -> ReportError:
    """The error for a ``root`` that holds no job."""
    return ReportError(f"no job under {root}: no {OVERRIDES_FILE.as_posix()} in it or below it")


def check_paths(root: Path, out: Path) -> None:
    """Refuse ``root`` and ``out`` when no report can be made of them (:class:`ReportError`)."""
    check_directory(root)
    check_output(out)
    if next(root.rglob(OVERRIDES_FILE.as_posix()), None) is None:
        raise no_job(root)
