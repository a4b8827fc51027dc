"""Ray for one simulation: a private Ray on this machine, or an existing cluster.

The simulation starts (or attaches to) Ray itself before Flower runs, so that a wrong address
fails at once, in the caller, and Ray's start-up time is measured on its own; Flower finds Ray
initialised, uses it, and shuts it down at the end.

A private Ray keeps its session files in a directory of its own, removed at the end, so that runs
started at once (the parallel jobs of a sweep) share no files; its ports are picked at random.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
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
SHORT_TEMP = "/tmp"
REAP_SECONDS = 10.0  # Ray's socket paths must stay short; $TMPDIR can be long (macOS)


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


def _processes_naming(text: str) -> list[int]:
    """Ids of this machine's processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if text.encode() in command:
                found.append(int(entry.name))
    return found


def reap(session_dir: str, patience: float = REAP_SECONDS) -> None:
    """Wait for the processes of a stopped private Ray (those naming its ``session_dir``) to end;
    kill those still there after ``patience`` seconds. Ray's agents can outlive ``ray.shutdown``
    by seconds (the raylet restarts one it saw die), and a stopped run must leave none behind."""
    if not Path("/proc").is_dir():  # not Linux: nothing to look at
        return
    deadline = perf_counter() + patience
    while (left := _processes_naming(session_dir)) and perf_counter() < deadline:
        time.sleep(0.2)
    for pid in left:
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

    def stop() -> None:
        nonlocal stopped
        if stopped:  # already under way (a signal during the normal shutdown): never twice
            return
        stopped = True
        ray.shutdown()
        if temp_dir is not None:
            reap(temp_dir)
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
