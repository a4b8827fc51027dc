"""What attacking every update costs a federated round, and what Ray's start costs.

One simulation (FedSGD on the embedded data, the malicious server attacking every update) reports,
per round, the clients' time (configure, local training, replies), the aggregation's and the
attacks' (gradient estimate, attack, scoring, records). A round without the attack is clients +
aggregation; with it, the attacks are added. The round's image grid is drawn in a background
thread while the next round trains; its time is shown, not added.
Round 1 also pays for starting the clients' Ray workers; the steady state is the later rounds.

    python benchmarks/bench_round.py
    python benchmarks/bench_round.py --model cnn2_c5 --clients 10 --rounds 4
    python benchmarks/bench_round.py attack.options.tolerance=1e-8
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from statistics import fmean
from typing import Any

from fl_leak.config import compose
from fl_leak.fl import simulate


def run(model: str, clients: int, rounds: int, attack: str, extra: list[str]) -> dict[str, Any]:
    """Summary of one benchmark simulation (outputs in a temporary directory)."""
    overrides = [
        f"model={model}",
        f"attack={attack}",
        f"fl.num_clients={clients}",
        f"fl.rounds={rounds}",
        "fl.batch_size=1",
        "fl.local_steps=1",
        "audit.enabled=false",
        *extra,
    ]
    with tempfile.TemporaryDirectory(prefix="bench_round_") as output_dir:
        return simulate(compose(overrides), Path(output_dir))


def _own(entry: dict[str, float]) -> float:
    return entry["clients_seconds"] + entry["aggregate_seconds"]


def table(summary: dict[str, Any]) -> str:
    """Per-round figures, the steady-state mean, Ray's start."""
    lines = [
        f"{'round':>6} {'clients s':>10} {'aggregate s':>12} {'attack s':>9} {'grid s':>7} "
        f"{'round s':>8} {'+attack s':>10} {'ratio':>6}"
    ]
    rows = [entry for entry in summary["rounds"] if "attack_seconds" in entry]
    for entry in rows:
        own, total = _own(entry), _own(entry) + entry["attack_seconds"]
        lines.append(
            f"{entry['round']:>6} {entry['clients_seconds']:>10.3f} "
            f"{entry['aggregate_seconds']:>12.4f} {entry['attack_seconds']:>9.3f} "
            f"{entry['grid_seconds']:>7.3f} {own:>8.3f} {total:>10.3f} {total / own:>6.1f}"
        )
    steady = rows[1:] or rows
    own = fmean(_own(entry) for entry in steady)
    total = own + fmean(entry["attack_seconds"] for entry in steady)
    lines.append(
        f"{'steady':>6} {'':>10} {'':>12} {'':>9} {'':>7} {own:>8.3f} {total:>10.3f} "
        f"{total / own:>6.1f}   (mean of rounds 2..)"
    )
    lines.append(f"Ray start-up (private Ray, on its own): {summary['ray_start_seconds']:.2f} s")
    lines.append(f"attack per update: {summary['mean']['seconds']:.3f} s (mean)")
    return "\n".join(lines)


def main() -> None:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn2_c1")
    parser.add_argument("--attack", default="linear")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="more fl-leak overrides")
    args = parser.parse_args()
    summary = run(args.model, args.clients, args.rounds, args.attack, args.overrides)
    print(
        f"{args.clients} clients, FedSGD, embedded data, {args.model}, attack={args.attack} "
        + " ".join(args.overrides)
    )
    print(table(summary))


if __name__ == "__main__":
    main()
