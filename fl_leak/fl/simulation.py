"""One ``fl-leak`` experiment: a Flower simulation with the malicious server, on Ray."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flwr.simulation import run_simulation

from fl_leak.config import RunConfig
from fl_leak.defenses import build_defense
from fl_leak.fl.client_app import make_client_app
from fl_leak.fl.leakage import UpdateAttacker
from fl_leak.fl.ray_session import quiet_environment, ray_session
from fl_leak.fl.secagg import make_secagg_client_app, make_secagg_server_app
from fl_leak.fl.server_app import AttackerFactory, make_server_app
from fl_leak.fl.validation import check
from fl_leak.records import SUMMARY_FILE


def simulate(
    settings: RunConfig,
    output_dir: Path,
    attacker_factory: AttackerFactory = UpdateAttacker,
    **summary_extra: Any,
) -> dict[str, Any]:
    """Check ``settings``, run the simulation, write the outputs; return the summary.

    Raises ``ConfigError`` naming the bad values before anything starts. ``attacker_factory``
    and ``summary_extra`` go to :func:`fl_leak.fl.server_app.serve`, or under a defense with
    secure aggregation to :func:`fl_leak.fl.secagg.serve_secagg` (Flower's legacy path, the only
    one SecAgg+ runs on).
    """
    check(settings)
    output_dir = Path(output_dir)
    quiet_environment(output_dir)
    secure = build_defense(settings.defense.name, settings.defense.options).secure_aggregation
    make_server, make_client = (
        (make_secagg_server_app, make_secagg_client_app)
        if secure
        else (make_server_app, make_client_app)
    )
    with ray_session(settings.ray) as ray_seconds:
        run_simulation(
            server_app=make_server(
                lambda _: (settings, output_dir),
                attacker_factory,
                ray_start_seconds=ray_seconds,
                **summary_extra,
            ),
            client_app=make_client(lambda _: settings),
            num_supernodes=settings.fl.num_clients,
            backend_config={
                "client_resources": {"num_cpus": settings.fl.client_cpus, "num_gpus": 0.0}
            },
        )
    return json.loads((output_dir / SUMMARY_FILE).read_text())
