"""Ray for one simulation: a private Ray on this machine, or an existing cluster.

The simulation starts (or attaches to) Ray itself before Flower runs, so that a wrong address
fails at once, in the caller, and Ray's start-up time is measured on its own; Flower finds Ray
initialised, uses it, and shuts it down at the end.

A private Ray keeps its session files in a directory of its own, removed at the end, so that runs
started at once (the parallel jobs of a sweep) share no files; its ports are picked at random.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from time import perf_counter
from typing import Any

from fl_leak.config import RayConfig
from fl_leak.fl.interrupts import add_cleanup, reclaim_signals, remove_cleanup

LOOPBACK_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
SHORT_TEMP = "/tmp"  # Ray's socket paths must stay short; $TMPDIR can be long (macOS)
REAP_SECONDS = 10.0
PR_SET_CHILD_SUBREAPER = 36  # prctl option (linux/prctl.h)


def quiet_environment(output_dir: Path) -> None:
    """Run-local ``FLWR_HOME``, no telemetry or usage stats, Flower's log at errors only."""
    os.environ["FLWR_HOME"] = str(output_dir / ".flwr")
    os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO"] = "0"
    logging.getLogger("flwr").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # Flower's state database, at import


def keep_on_loopback() -> None:
    """Make the Ray of this process, and every process it starts, use 127.0.0.1 only.

    Ray takes a node's address from the route to the internet and listens on it, and it resolves
    ``127.0.0.1`` in an address to that too, unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``. Ray
    reads that variable once, when imported, so its constant is set as well.
    """
    os.environ[LOOPBACK_VARIABLE] = "0"
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def init_args(config: RayConfig) -> dict[str, Any]:
    """Keyword arguments of ``ray.init`` for ``config``."""
    args: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
    if config.address:
        return {**args, "address": config.address}
    args["include_dashboard"] = False
    if config.num_cpus is not None:
        args["num_cpus"] = config.num_cpus
    return args


def adopt_orphans() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux's child subreaper), so
    that Ray processes whose parent dies are re-parented here, where :func:`reap` finds them.
    Returns whether it could."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def _children() -> list[int]:
    """Ids of this process's live children (zombies are collected on the way)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == os.getpid() and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def reap(patience: float = REAP_SECONDS, quiet: float = 0.3) -> None:
    """Wait until this process has had no child for ``quiet`` seconds; after ``patience``
    seconds kill those left. Called once a private Ray is shut down: its agents can outlive
    ``ray.shutdown`` by seconds (the raylet restarts one it saw die while it stops), and a
    stopped run must leave no process behind. As this process reaps its orphans, no child
    means no descendant at all; ``quiet`` spans a few scans, for a process re-parented here
    while one scan was reading ``/proc``."""
    deadline = perf_counter() + patience
    last_seen = perf_counter()
    while perf_counter() < deadline:
        if _children():
            last_seen = perf_counter()
        elif perf_counter() - last_seen >= quiet:
            return
        time.sleep(0.1)
    for pid in _children():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


@contextmanager
def ray_session(config: RayConfig) -> Iterator[float]:
    """Start or attach Ray; yield the seconds it took; disconnect (stop a private Ray) after."""
    import ray

    if config.loopback:
        keep_on_loopback()
    args = init_args(config)
    temp_dir = None
    if not config.address:
        temp_dir = tempfile.mkdtemp(
            prefix="ray", dir=SHORT_TEMP if os.path.isdir(SHORT_TEMP) else None
        )
        args["_temp_dir"] = temp_dir

    stopped = False
    adopted = not config.address and adopt_orphans()  # a private Ray: its processes are ours

    def stop() -> None:
        nonlocal stopped
        if stopped:  # already under way (a signal during the normal shutdown): never twice
            return
        stopped = True
        ray.shutdown()
        if adopted:
            reap()
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)

    start = perf_counter()
    ray.init(**args)
    reclaim_signals()
    add_cleanup(stop)  # an interrupted run stops Ray too
    try:
        yield perf_counter() - start
    finally:
        remove_cleanup(stop)
        stop()
