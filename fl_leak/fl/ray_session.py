"""Ray for one simulation: a private Ray on this machine, or an existing cluster.

The simulation starts (or attaches to) Ray itself before Flower runs, so that a wrong address
fails at once, in the caller, and Ray's start-up time is measured on its own; Flower finds Ray
initialised, uses it, and shuts it down at the end.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from time import perf_counter
from typing import Any

from fl_leak.config import RayConfig

LOOPBACK_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def quiet_environment(output_dir: Path) -> None:
    """Run-local ``FLWR_HOME``, no telemetry or usage stats, Flower's log at errors only."""
    os.environ["FLWR_HOME"] = str(output_dir / ".flwr")
    os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO"] = "0"
    logging.getLogger("flwr").setLevel(logging.ERROR)


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


@contextmanager
def ray_session(config: RayConfig) -> Iterator[float]:
    """Start or attach Ray; yield the seconds it took; disconnect (stop a private Ray) after."""
    import ray

    if config.loopback:
        keep_on_loopback()
    start = perf_counter()
    ray.init(**init_args(config))
    try:
        yield perf_counter() - start
    finally:
        ray.shutdown()
