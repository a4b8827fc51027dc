"""Stopping a run on the first Ctrl-C (SIGINT) or SIGTERM, keeping what it has done.

A Flower simulation runs its ServerApp in a thread and its clients in Ray actors; a
``KeyboardInterrupt`` raised in the main thread lands inside Flower's loop, which does not stop.
So the run handles the signal itself: parts of the run register a cleanup while they are alive
(:func:`add_cleanup`: the result sink writes ``summary.json`` for what was done, the Ray session
stops Ray), and :func:`stop_on_signals` marks the job ``interrupted``, runs them, newest first,
and ends the process with exit code 130. Signals during the cleanups are ignored (Flower signals
itself when Ray goes); a watchdog ends the process if the cleanups take ``CLEANUP_SECONDS``.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from fl_leak.records import write_status

INTERRUPTED_EXIT_CODE = 130
QUIETED = ("flwr", "ray")  # loggers of the parts that keep running, and failing, while Ray stops
CLEANUP_SECONDS = 20.0  # what the cleanups get before a watchdog ends the process
SIGNALS = (signal.SIGINT, signal.SIGTERM)

_cleanups: list[Callable[[], None]] = []
_output_dir: Path | None = None  # set while stop_on_signals is active


def add_cleanup(cleanup: Callable[[], None]) -> None:
    """Run ``cleanup`` if the run is interrupted, until :func:`remove_cleanup` is called."""
    _cleanups.append(cleanup)


def remove_cleanup(cleanup: Callable[[], None]) -> None:
    """Forget ``cleanup`` (its part of the run has finished); no error if it is not known."""
    if cleanup in _cleanups:
        _cleanups.remove(cleanup)


def _stop(output_dir: Path, number: int, _frame: FrameType | None) -> None:
    """The signal handler: mark the job, run the cleanups (newest first), end the process.

    It runs in the main thread, between two of its bytecodes; should a cleanup block (a lock the
    interrupted code holds), a watchdog (``faulthandler``) ends the process after
    ``CLEANUP_SECONDS``, printing where it was stuck. Nothing here logs: the interrupted code may
    hold a logging handler's lock.
    """
    name = signal.Signals(number).name
    for ignored in SIGNALS:  # later signals (Flower's own, when Ray goes) must not cut it short
        signal.signal(ignored, signal.SIG_IGN)
    print(f"fl-leak: {name} received, stopping: saving what was done ...", file=sys.stderr)
    write_status(output_dir, "interrupted", reason=f"stopped by {name}")
    for noisy in QUIETED:  # what goes on failing while Ray stops is no news: silence it
        logging.getLogger(noisy).disabled = True
    faulthandler.dump_traceback_later(CLEANUP_SECONDS, exit=True)
    for cleanup in reversed(list(_cleanups)):
        try:
            cleanup()
        except Exception as error:  # the others must still run
            print(f"fl-leak: while stopping: {type(error).__name__}: {error}", file=sys.stderr)
    faulthandler.cancel_dump_traceback_later()
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
