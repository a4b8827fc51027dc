"""What a command costs before any work starts, against importing torch alone.

Each command runs in a fresh process, ``--repeats`` times, alternating with the others so that a
busy spell hits them alike; the table gives the median wall-clock seconds and the ratio to
``python -c "import torch"``. The rejected value is ``fl.batch_size=-3`` (exit code 2).

    python benchmarks/bench_startup.py
    python benchmarks/bench_startup.py --repeats 9
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import median
from time import perf_counter


def commands(scratch: Path) -> dict[str, tuple[list[str], int]]:
    """Name -> (command line, expected exit code)."""
    python = sys.executable
    app = [python, "-m", "fl_leak.cli.main", f"hydra.run.dir={scratch}"]
    audit = [python, "-m", "fl_leak.cli.audit"]
    return {
        'python -c "import torch"': ([python, "-c", "import torch"], 0),
        "fl-leak --help": ([*app, "--help"], 0),
        "fl-leak --cfg job": ([*app, "--cfg", "job"], 0),
        "fl-leak fl.batch_size=-3": ([*app, "fl.batch_size=-3"], 2),
        "fl-leak-audit --help": ([*audit, "--help"], 0),
    }


def seconds(command: list[str], expected: int) -> float:
    """Wall-clock seconds of one run of ``command``; raises if it exits otherwise."""
    start = perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    elapsed = perf_counter() - start
    if result.returncode != expected:
        raise RuntimeError(f"{command} exited {result.returncode}: {result.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_startup_") as scratch:
        table = commands(Path(scratch))
        times: dict[str, list[float]] = {name: [] for name in table}
        for _ in range(args.repeats):
            for name, (command, expected) in table.items():
                times[name].append(seconds(command, expected))
    baseline = median(times['python -c "import torch"'])
    print(f"{'command':<28}{'median s':>10}{'min s':>9}{'x import torch':>16}")
    for name, values in times.items():
        ratio = median(values) / baseline
        print(f"{name:<28}{median(values):>10.2f}{min(values):>9.2f}{ratio:>16.2f}")


if __name__ == "__main__":
    main()
