"""The audit's exact ranks, the way it worked before against the way it works now, side by side.

For every layer below the last of each network (batch 1, random probe, as ``fl_leak.audit``):

* before: the dense matrix built column by column (``LayerSystem.dense``) and all its singular
  values (``torch.linalg.svdvals``);
* now: :func:`fl_leak.attacks.linear.matrix.layer_spectrum`, as the audit computes it: the sparse
  matrix and :func:`fl_leak.attacks.linear.spectrum.spectrum` (Gram certificate, else an inertia
  count or the Gram matrix's eigenvalues with a certified null space, else the dense SVD).

Both on one torch thread. Prints the machine's load (``uptime``) before and after, each network's
seconds both ways, the ratio, the index both ways and the path each layer took now, and stops with
an error if a rank, deficiency, weak count, condition (to ``1e-6``) or the index differs. The last
row is the total over the networks run.

    python benchmarks/bench_audit.py                       # the paper's whole family
    python benchmarks/bench_audit.py --models cnn3_c1,cnn3_c3
"""

from __future__ import annotations

import argparse
import math
import subprocess
import time

import torch

import fl_leak
from fl_leak.attacks.linear.matrix import layer_spectrum
from fl_leak.attacks.linear.spectrum import Spectrum, from_singular_values
from fl_leak.metrics.audit import probe_layers, security_index
from fl_leak.models.family import FAMILY

MAX_DENSE = 6000  # fl_leak.audit's default
RTOL = 1e-4  # fl_leak.audit's default


def _timed(compute) -> tuple[Spectrum, float]:
    start = time.perf_counter()
    result = compute()
    return result, time.perf_counter() - start


def network(name: str) -> tuple[float, float, int, int, str]:
    """Seconds before and now, the index both ways, and the paths taken now."""
    model = fl_leak.build_model(name, seed=0)
    systems = probe_layers(model, (3, 32, 32), 1, scaled=True).systems
    before_seconds = now_seconds = 0.0
    before_deficiency, now_deficiency, paths = [], [], []
    for index, system in enumerate(systems):
        if min(system.shape) > MAX_DENSE:  # the structural bound, the same both ways
            bound = system.deficiency_bound()
            before_deficiency.append(bound)
            now_deficiency.append(bound)
            paths.append("bound")
            continue
        old, old_seconds = _timed(
            lambda s=system: from_singular_values(torch.linalg.svdvals(s.dense()), s.shape, RTOL)
        )
        new, new_seconds = _timed(lambda s=system: layer_spectrum(s, RTOL))
        if (old.rank, old.weak) != (new.rank, new.weak) or not math.isclose(
            old.condition, new.condition, rel_tol=1e-6
        ):
            raise SystemExit(f"{name} layer {index}: before {old}, now {new}")
        before_seconds += old_seconds
        now_seconds += new_seconds
        before_deficiency.append(system.num_unknowns - old.rank)
        now_deficiency.append(system.num_unknowns - new.rank)
        paths.append(new.method)
    before_index, now_index = security_index(before_deficiency), security_index(now_deficiency)
    if before_index != now_index:
        raise SystemExit(f"{name}: index {before_index} before, {now_index} now")
    return before_seconds, now_seconds, before_index, now_index, ",".join(paths)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default=",".join(FAMILY), help="default: the whole family")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(_uptime(), flush=True)
    print(
        f"{'model':<10} {'before s':>9} {'now s':>7} {'ratio':>6} {'index':>6} {'now':>6}  paths",
        flush=True,
    )
    total_before = total_now = 0.0
    for name in args.models.split(","):
        before, now, before_index, now_index, paths = network(name)
        total_before += before
        total_now += now
        ratio = before / now if now > 0 else math.nan
        print(
            f"{name:<10} {before:>9.2f} {now:>7.2f} {ratio:>6.1f} {before_index:>6} "
            f"{now_index:>6}  {paths}",
            flush=True,
        )
    print(
        f"{'total':<10} {total_before:>9.2f} {total_now:>7.2f} "
        f"{total_before / max(total_now, 1e-12):>6.1f}   (ranks, weak counts and indices identical)"
    )
    print(_uptime())


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    main()
