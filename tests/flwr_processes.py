"""Helpers of the tests that run Flower's own commands: their environment, their processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def flwr_environment(home: Path) -> dict[str, str]:
    """The environment of a Flower command: offline, quiet, this checkout's fl_leak, state in
    ``home`` (``FLWR_HOME``)."""
    python_path = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(python_path),
        "FLWR_HOME": str(home),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    }


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, timeout: float = 60.0) -> None:
    """Wait until something accepts connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")
        time.sleep(0.2)


def _command_lines() -> dict[int, str]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                found[int(entry.name)] = (
                    (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                )
            except OSError:
                continue
    return found


def processes_mentioning(*texts: str) -> list[int]:
    """Ids of processes whose command line contains any of ``texts``."""
    return [
        pid
        for pid, command in _command_lines().items()
        if command and any(text in command for text in texts)
    ]


def descendants(pids: list[int]) -> list[int]:
    """The processes started by ``pids`` (children, theirs, ...), alive now."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: list[int] = []
    frontier = set(pids)
    while frontier:
        children = {pid for pid, parent in parents.items() if parent in frontier}
        found.extend(sorted(children - set(found)))
        frontier = children - set(pids)
        pids = [*pids, *children]
    return found


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stop(pids: list[int], timeout: float = 30.0) -> None:
    """SIGTERM every process of ``pids``, SIGKILL those still alive after ``timeout`` seconds."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            for pid in pids:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.3)


def flwr_run(command: list[str], home: Path, cwd: Path) -> subprocess.CompletedProcess:
    """``flwr run ...`` with the environment of :func:`flwr_environment`; stops the detached
    SuperLink it leaves (its state lives in ``home``) whatever happens."""
    try:
        return subprocess.run(
            command,
            cwd=cwd,
            env=flwr_environment(home),
            capture_output=True,
            text=True,
            timeout=400,
        )
    finally:
        stop(processes_mentioning(str(home)))
