"""The apps that ``flwr run .`` loads (pyproject's ``[tool.flwr.app.components]``).

Their settings come from the run config (``[tool.flwr.app.config]``, ``--run-config``): every key
is a Hydra override of ``conf/config.yaml`` with ``-`` read as ``_`` (``fl.num-clients = 10`` is
``fl.num_clients=10``, ``model = "cnn6d"`` selects the model group), except ``output-dir``, the
directory of the run's outputs (relative to the ServerApp's working directory; empty:
``outputs/flwr/<run id>``). ``fl.num-clients`` must equal the federation's ``num-supernodes``
(on a SuperLink: the SuperNodes' ``num-partitions``). Each node may read its own data and decide
whether to send ground truth from its node config (:mod:`fl_leak.fl.node_data`); server and nodes
check they run the same fl-leak (:mod:`fl_leak.fl.version`). See docs/deployment.md.

These are the Message-API apps: a defense with secure aggregation (``defense=secagg``), which runs
on Flower's legacy path, is refused here; ``fl-leak`` (:func:`fl_leak.fl.simulate`) runs it.
"""

from __future__ import annotations

import logging
import sys
from functools import lru_cache
from pathlib import Path

from flwr.app import Context

from fl_leak.config import RunConfig, compose
from fl_leak.defenses import build_defense
from fl_leak.fl.client_app import make_client_app
from fl_leak.fl.server_app import make_server_app
from fl_leak.fl.validation import ConfigError, check

OUTPUT_KEY = "output-dir"


def overrides(run_config: dict[str, object]) -> list[str]:
    """Hydra overrides of a Flower run config."""
    return [
        f"{key.replace('-', '_')}={str(value).lower() if isinstance(value, bool) else value}"
        for key, value in sorted(run_config.items())
        if key != OUTPUT_KEY
    ]


@lru_cache(maxsize=4)
def _compose(items: tuple[str, ...]) -> RunConfig:
    return compose(items)


def run_settings(context: Context) -> RunConfig:
    """The settings of this run (composed once per process)."""
    return _compose(tuple(overrides(dict(context.run_config))))


def show_progress() -> None:
    """Print fl-leak's progress lines on stdout, which ``flwr run --stream`` relays."""
    logger = logging.getLogger("fl_leak")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def server_run(context: Context) -> tuple[RunConfig, Path]:
    """The checked settings and the output directory of this run."""
    show_progress()
    settings = run_settings(context)
    check(settings)
    if build_defense(settings.defense.name, settings.defense.options).secure_aggregation:
        raise ConfigError(
            f"defense={settings.defense.name!r} runs on Flower's legacy path (SecAgg+), which "
            "`flwr run .` does not take here: run it with fl-leak"
        )
    output = str(context.run_config.get(OUTPUT_KEY, "")) or f"outputs/flwr/{context.run_id}"
    return settings, Path(output).resolve()


server_app = make_server_app(server_run)
client_app = make_client_app(run_settings)
