"""One ``fl-leak`` experiment from its settings: live, or through the capture cache.

``run`` is what the ``fl-leak`` command calls for every job: it checks the settings, then either
runs the Flower simulation (attacking live), or replays a saved capture of the same updates
(:mod:`fl_leak.fl.capture`), saving one first when the cache has none.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from filelock import FileLock

from fl_leak.config import CaptureMode, RunConfig
from fl_leak.fl.capture import META_FILE, Capture, CaptureWriter, capture_key, replay
from fl_leak.fl.simulation import simulate
from fl_leak.fl.validation import ConfigError, check

log = logging.getLogger(__name__)


def effective_mode(mode: CaptureMode, multirun: bool) -> CaptureMode:
    """``auto`` resolved: ``reuse`` in a multirun, ``off`` in a single run."""
    if mode is CaptureMode.auto:
        return CaptureMode.reuse if multirun else CaptureMode.off
    return mode


def run(settings: RunConfig, output_dir: Path, multirun: bool = False) -> dict[str, Any]:
    """One experiment: live (``fl_leak.fl.simulate``), or through the capture cache.

    With ``capture.mode`` reuse (or auto in a multirun), replays the capture of these settings
    when there is one; otherwise simulates, attacking live and saving the capture. With replay,
    a missing capture is a :class:`ConfigError`. A lock per key makes parallel jobs of a sweep
    wait for the one that simulates; a capture appears (renamed into place) only once its run has
    finished, and replays of it run side by side. Returns the summary.
    """
    mode = effective_mode(settings.capture.mode, multirun)
    if mode is CaptureMode.off:
        return simulate(settings, output_dir)
    check(settings)
    root = Path(settings.capture.dir).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    key = capture_key(settings)
    directory = root / key
    with FileLock(root / f"{key}.lock"):
        if not (directory / META_FILE).exists():
            if mode is CaptureMode.replay:
                raise ConfigError(
                    f"capture.mode=replay but {root} holds no capture {key} of these settings; "
                    "run them once with capture.mode=reuse"
                )
            return _simulate_and_capture(settings, output_dir, root, key)
    # a finished capture is never written again: replays read it without the lock, side by side
    log.info("replaying capture %s: no Flower simulation", directory)
    info = {"key": key, "replayed": True}
    return replay(Capture(directory), settings, Path(output_dir), capture=info)


def _simulate_and_capture(
    settings: RunConfig, output_dir: Path, root: Path, key: str
) -> dict[str, Any]:
    """Simulate, attacking live, and save the capture under ``root / key`` once the run has
    finished (written aside, then renamed into place). Returns the summary."""
    partial_dir = root / f"{key}.partial"
    shutil.rmtree(partial_dir, ignore_errors=True)
    writer = CaptureWriter(partial_dir, settings)
    try:
        summary = simulate(
            settings, output_dir, writer.attacker, capture={"key": key, "replayed": False}
        )
        writer.close(summary)
    except BaseException:
        shutil.rmtree(partial_dir, ignore_errors=True)
        raise
    directory = root / key
    partial_dir.rename(directory)
    log.info("saved capture %s", directory)
    return summary
