"""The ``threads`` setting: each attack and the audit on one thread against torch's default count.

On one update (``--model``, embedded image ``--image``, batch 1, labels recovered) the script
times ``linear``, ``hybrid`` (its correction must run: cnn3_c1 is rank-deficient, so
``correct="auto"`` corrects; the script says so if it did not), ``ig`` and ``dlg`` with fixed
small iteration counts, and ``fl_leak.audit`` of ``--audit-model``, each with the library's
default (``threads=1``) and with torch's default thread count (``threads=None`` in a process that
left torch at its default, one thread per core). Each is timed on the machine as it is ("quiet")
and with one other busy process (a child spinning on one core: a pure-Python loop, or 1-thread
torch matmuls with ``--busy matmul``; killed by its pid afterwards). Times are wall-clock seconds
of the whole call, the median of ``--repeats`` runs. The table gives, per attack and setting, the
quiet and busy seconds, busy/quiet, and each setting's seconds over the one-thread seconds under
the same condition. Other work on the machine counts as part of "quiet": the header prints the
load average before each phase.

    python benchmarks/bench_threads.py [--model cnn3_c1] [--hybrid-iterations 200]
        [--ig-iterations 50] [--dlg-iterations 5] [--audit-model cnn2_c1] [--repeats 1]
        [--busy python|matmul] [--attacks linear,hybrid,ig,dlg,audit]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

import fl_leak
from fl_leak.data import load_dataset
from fl_leak.threads import DEFAULT_THREADS

BUSY = {
    "python": "while True:\n    pass\n",
    "matmul": (
        "import torch\ntorch.set_num_threads(1)\na = torch.rand(256, 256)\n"
        "while True:\n    a = (a @ a).div_(a.norm())\n"
    ),
}
ATTACKS = ("linear", "hybrid", "ig", "dlg", "audit")
CONDITIONS = ("quiet", "busy")


def _update(name: str, image: int):
    data = load_dataset("embedded")
    model = fl_leak.build_model(name, num_classes=data.info.num_classes, seed=0)
    x, y = data[image]
    loss = F.cross_entropy(model(x[None]), torch.tensor([y]))
    gradients = [g.detach() for g in torch.autograd.grad(loss, list(model.parameters()))]
    return model, gradients, data.info.num_classes


def _calls(args: argparse.Namespace) -> dict[str, Callable[[int | None], object]]:
    """Per attack, a call that runs it with the given ``threads``; runs each once, briefly, so
    that first-call costs (imports, allocations) stay out of the table."""
    model, gradients, classes = _update(args.model, args.image)
    audited = fl_leak.build_model(args.audit_model, num_classes=classes, seed=0)
    uncorrected: list[int | None] = []

    def attack(name: str, **options: object) -> Callable[[int | None], object]:
        def call(threads: int | None) -> object:
            rec = fl_leak.reconstruct(model, gradients, attack=name, threads=threads, **options)
            if name == "hybrid" and not rec.layers[0].corrected and not uncorrected:
                uncorrected.append(threads)
                print(f"note: hybrid did not correct on {args.model}", flush=True)
            return rec

        return call

    def audit(threads: int | None) -> object:
        return fl_leak.audit(audited, (3, 32, 32), 1, threads=threads)

    fl_leak.reconstruct(model, gradients, attack="linear")
    for name in ("ig", "dlg"):
        fl_leak.reconstruct(model, gradients, attack=name, iterations=1, log_every=None)
    return {
        "linear": attack("linear"),
        "hybrid": attack("hybrid", iterations=args.hybrid_iterations),
        "ig": attack("ig", iterations=args.ig_iterations, log_every=None),
        "dlg": attack("dlg", iterations=args.dlg_iterations, log_every=None),
        "audit": audit,
    }


def _median_seconds(call: Callable[[int | None], object], threads: int | None, repeats: int):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call(threads)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _start_busy(kind: str) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", BUSY[kind]])
    time.sleep(1.0)  # let it reach its loop
    if process.poll() is not None:
        raise RuntimeError(f"the busy process exited with {process.returncode}")
    return process


def _stop(process: subprocess.Popen) -> None:
    process.kill()
    process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="cnn3_c1", help="network of the attacked update")
    parser.add_argument("--image", type=int, default=0, help="embedded train index")
    parser.add_argument("--hybrid-iterations", type=int, default=200, help="correction steps")
    parser.add_argument("--ig-iterations", type=int, default=50)
    parser.add_argument("--dlg-iterations", type=int, default=5)
    parser.add_argument("--audit-model", default="cnn2_c1")
    parser.add_argument("--repeats", type=int, default=1, help="runs per cell (median)")
    parser.add_argument("--busy", choices=sorted(BUSY), default="python")
    parser.add_argument("--attacks", default=",".join(ATTACKS))
    args = parser.parse_args()
    attacks = args.attacks.split(",")
    unknown = sorted(set(attacks) - set(ATTACKS))
    if unknown:
        parser.error(f"unknown attacks {unknown}; choose from {ATTACKS}")
    default_threads = torch.get_num_threads()
    settings = {"library": DEFAULT_THREADS, "torch": None}
    labels = {"library": f"threads={DEFAULT_THREADS}", "torch": f"None ({default_threads})"}
    calls = _calls(args)
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, torch's default threads "
        f"{default_threads}; update: {args.model} image {args.image}; hybrid "
        f"{args.hybrid_iterations} correction iterations, ig {args.ig_iterations}, dlg "
        f"{args.dlg_iterations} iterations; audit {args.audit_model}; busy: one {args.busy} "
        f"process; median of {args.repeats}",
        flush=True,
    )
    seconds: dict[tuple[str, str, str], float] = {}
    for condition in CONDITIONS:
        busy = _start_busy(args.busy) if condition == "busy" else None
        try:
            load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
            print(f"{condition}: load average {load}", flush=True)
            for name in attacks:
                for setting, threads in settings.items():
                    seconds[name, setting, condition] = _median_seconds(
                        calls[name], threads, args.repeats
                    )
        finally:
            if busy is not None:
                _stop(busy)
    header = (
        f"{'attack':<7} {'threads':<12} {'quiet s':>8} {'busy s':>8} {'busy/quiet':>10} "
        f"{'quiet x 1 thread':>16} {'busy x 1 thread':>15}"
    )
    print(header)
    print("-" * len(header))
    for name in attacks:
        for setting in settings:
            quiet, busy_seconds = seconds[name, setting, "quiet"], seconds[name, setting, "busy"]
            base_quiet = seconds[name, "library", "quiet"]
            base_busy = seconds[name, "library", "busy"]
            print(
                f"{name:<7} {labels[setting]:<12} {quiet:>8.2f} {busy_seconds:>8.2f} "
                f"{busy_seconds / quiet:>10.1f} {quiet / base_quiet:>16.1f} "
                f"{busy_seconds / base_busy:>15.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
