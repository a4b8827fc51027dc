"""Stopping a run on the first Ctrl-C (SIGINT) or SIGTERM, keeping what it has done.

A Flower simulation runs its ServerApp in a thread and its clients in Ray actors; a
``KeyboardInterrupt`` raised in the main thread lands inside Flower's loop, which does not stop.
So the run handles the signal itself: parts of the run register a cleanup while they are alive
(:func:`add_cleanup`: the result sink writes ``summary.json`` for what was done, the Ray session
stops Ray), and :func:`stop_on_signals` runs them, newest first, marks the job ``interrupted`` and
ends the process with exit code 130. A second signal during the cleanups ends it at once.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from fl_leak.records import write_status

INTERRUPTED_EXIT_CODE = 130
CLEANUP_SECONDS = 20.0  # what the cleanups get before the process ends anyway
SIGNALS = (signal.SIGINT, signal.SIGTERM)

_cleanups: list[Callable[[], None]] = []
_stopping = False
_output_dir: Path | None = None  # set while stop_on_signals is active


def add_cleanup(cleanup: Callable[[], None]) -> None:
    """Run ``cleanup`` if the run is interrupted, until :func:`remove_cleanup` is called."""
    _cleanups.append(cleanup)


def remove_cleanup(cleanup: Callable[[], None]) -> None:
    """Forget ``cleanup`` (its part of the run has finished); no error if it is not known."""
    if cleanup in _cleanups:
        _cleanups.remove(cleanup)


def _run_cleanups() -> None:
    for cleanup in reversed(list(_cleanups)):
        try:
            cleanup()
        except Exception as error:  # the others must still run
            print(f"fl-leak: while stopping: {type(error).__name__}: {error}", file=sys.stderr)


def _stop(output_dir: Path, number: int, _frame: FrameType | None) -> None:
    """The signal handler. It runs in the main thread, between two of its bytecodes, perhaps
    while that thread holds a lock the cleanups need (Ray's, a logging handler's): so the cleanups
    run in a thread of their own, given ``CLEANUP_SECONDS``, and nothing here logs."""
    global _stopping
    name = signal.Signals(number).name
    if _stopping:  # a second signal: no more waiting
        os._exit(INTERRUPTED_EXIT_CODE)
    _stopping = True
    print(f"fl-leak: {name} received, stopping: saving what was done ...", file=sys.stderr)
    worker = threading.Thread(target=_run_cleanups, name="fl-leak-stop", daemon=True)
    worker.start()
    worker.join(CLEANUP_SECONDS)
    if worker.is_alive():
        print(
            f"fl-leak: cleanups still running after {CLEANUP_SECONDS} s: leaving", file=sys.stderr
        )
    write_status(output_dir, "interrupted", reason=f"stopped by {name}")
    print(f"fl-leak: interrupted; outputs so far in {output_dir}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(INTERRUPTED_EXIT_CODE)


def _handle(number: int, frame: FrameType | None) -> None:
    assert _output_dir is not None
    _stop(_output_dir, number, frame)


def reclaim_signals() -> None:
    """Take SIGINT and SIGTERM back after a library installed its own handlers (``ray.init``
    installs one for SIGTERM that aborts the process); nothing outside :func:`stop_on_signals`."""
    if _output_dir is not None:
        for number in SIGNALS:
            signal.signal(number, _handle)


@contextmanager
def stop_on_signals(output_dir: Path) -> Iterator[None]:
    """While the block runs, SIGINT and SIGTERM stop the run as the module says."""
    global _output_dir
    previous = {number: signal.getsignal(number) for number in SIGNALS}
    _output_dir = output_dir
    reclaim_signals()
    try:
        yield
    finally:
        _output_dir = None
        for number, handler in previous.items():
            signal.signal(number, handler)
