"""Matrix-free layer solves against dense solves of the materialised matrix, in the same run.

Table 0 (``--square-only`` runs it alone): the square, ill-conditioned first layers of cnn2_c5
and lenet (batch 1, seeded random probe input): the default solve (``method="auto"``: CGLS
preconditioned by the layer's normal matrix, :mod:`fl_leak.attacks.linear.preconditioner`, built
afresh for every run, with nothing kept from the previous one)
against plain LSMR (``method="lsmr"``, at the default tolerance 1e-10 and at 1e-14) and against
torch's dense solve (materialise ``U``, ``torch.linalg.lstsq`` with gels). Each time is the best
of ``--repeats`` runs; errors are ``||x - x_true|| / ||x_true||`` and ``||x - x_dense|| /
||x_dense||``; the last columns are dense time over each solve's time.

Then three tables:

1. For large layer systems of the paper's family (batch 1, built at a seeded random input as in
   the audit): LSMR on the matrix-free operator against ``torch.linalg.lstsq`` (default driver
   gelsy, rank-revealing; and gels, QR) and ``np.linalg.lstsq`` on the materialised matrix.
   Times and the relative error ``||x - x_true|| / ||x_true||`` of each; the dense rows also give
   the time to materialise the matrix.
2. A 3x224x224 first-layer system (conv 3->12 k4 s2 p2, as cnn6d's first layer), where the dense
   matrix would need ~190 GB: matrix-free time and the process's peak resident memory.
3. ``hybrid`` on cnn3_c1 (rank-deficient) at batch 1: PSNR and seconds over embedded images.

    python benchmarks/bench_solver.py [--skip-numpy] [--quick] [--square-only] [--repeats 3]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import fl_leak
from fl_leak.attacks.linear import preconditioner as preconditioner_module
from fl_leak.attacks.linear.preconditioner import kernel_reach, setup_flops
from fl_leak.attacks.linear.solver import SolverOptions, solve_layer
from fl_leak.data import load_dataset
from fl_leak.metrics import psnr
from fl_leak.metrics.audit import probe_layers
from fl_leak.threads import torch_threads

LAYERS = [
    ("cnn3_c3", 1),
    ("cnn2_c1", 0),
    ("cnn2_c5", 0),
    ("cnn3_c5", 0),
    ("cnn4_c2", 0),
    ("lenet", 0),
]


def _relative_error(x: torch.Tensor, truth: torch.Tensor) -> float:
    return float((x.reshape(-1) - truth.reshape(-1)).norm() / truth.norm())


def _timed(function, *args, **kwargs):
    start = time.perf_counter()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - start


SQUARE_LAYERS = [("cnn2_c5", 0), ("lenet", 0)]


def _best(repeats: int, function, *args, **kwargs):
    """The value of the last run and the least seconds over ``repeats`` runs."""
    seconds = []
    for _ in range(repeats):
        value, elapsed = _timed(function, *args, **kwargs)
        seconds.append(elapsed)
    return value, min(seconds)


def _dense_solve(system):
    """torch's dense solve: materialise ``U``, then ``torch.linalg.lstsq`` (gels, QR)."""
    matrix = system.dense()
    return torch.linalg.lstsq(matrix, system.rhs().reshape(-1, 1), driver="gels").solution


def _fresh_solve(system, options):
    """``solve_layer`` on a copy of ``system``, cold: a preconditioner is built once per system
    object (:func:`~fl_leak.attacks.linear.preconditioner.normal_preconditioner`) and its band
    slots once per layer geometry, so every timed run pays for both afresh."""
    preconditioner_module._SLOTS.clear()
    return solve_layer(replace(system), options)


def square_layers(repeats: int) -> None:
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"0. square, ill-conditioned layers, torch threads {torch.get_num_threads()}; {load}")
    print(
        f"{'model':<8} {'solve':<30} {'seconds':>8} {'iters':>6} {'err truth':>9} "
        f"{'err dense':>9} {'dense/this':>10}",
        flush=True,
    )
    for name, index in SQUARE_LAYERS:
        probe = probe_layers(fl_leak.build_model(name, seed=0), (3, 32, 32), 1, scaled=True)
        system, truth = probe.systems[index], probe.inputs[index]
        reach = kernel_reach(system)
        assert reach is not None
        gflop = setup_flops(system, reach) / 1e9
        print(f"{name} layer {index}: preconditioner setup {gflop:.1f} GFLOP")
        with torch_threads():
            dense, dense_seconds = _best(repeats, _dense_solve, system)
            runs = [
                ("auto", SolverOptions()),
                ("auto, tolerance 1e-14", SolverOptions(tolerance=1e-14)),
                ("auto, tolerance 1e-16", SolverOptions(tolerance=1e-16)),
                ("cgls", SolverOptions(method="cgls")),
                ("lsmr", SolverOptions(method="lsmr")),
                ("lsmr, tolerance 1e-14", SolverOptions(method="lsmr", tolerance=1e-14)),
            ]
            for label, options in runs:
                (x, report), seconds = _best(repeats, _fresh_solve, system, options)
                print(
                    f"{name:<8} {f'{label}: {report.method}':<30} {seconds:>8.3f} "
                    f"{report.iterations:>6} {_relative_error(x, truth):>9.1e} "
                    f"{_relative_error(x, dense):>9.1e} {dense_seconds / seconds:>10.1f}",
                    flush=True,
                )
        print(
            f"{name:<8} {'dense: materialise + gels':<30} {dense_seconds:>8.3f} {'-':>6} "
            f"{_relative_error(dense, truth):>9.1e} {0.0:>9.1e} {1.0:>10.1f}",
            flush=True,
        )


def dense_versus_matrix_free(layers, with_numpy: bool) -> None:
    print("1. layer systems: matrix-free LSMR against dense least squares (times in seconds)")
    header = (
        f"{'model':<8} {'layer':>5} {'rows x unknowns':>16} {'LSMR s':>7} {'LSMR err':>9} "
        f"{'build s':>7} {'gelsy s':>7} {'gelsy err':>9} {'gels s':>7} {'gels err':>9} "
        f"{'numpy s':>7} {'numpy err':>9} {'gels/LSMR':>9}"
    )
    print(header, flush=True)
    for name, index in layers:
        probe = probe_layers(fl_leak.build_model(name, seed=0), (3, 32, 32), 1, scaled=True)
        system, truth = probe.systems[index], probe.inputs[index]
        with torch_threads():  # as the attacks run it
            (x, _), lsmr_seconds = _timed(solve_layer, system, SolverOptions(method="lsmr"))
        matrix, build_seconds = _timed(system.dense)
        rhs = system.rhs().reshape(-1, 1)
        gelsy, gelsy_seconds = _timed(torch.linalg.lstsq, matrix, rhs)
        gels, gels_seconds = _timed(torch.linalg.lstsq, matrix, rhs, driver="gels")
        gelsy, gels = gelsy.solution, gels.solution
        numpy_cells = f"{'-':>7} {'-':>9}"
        if with_numpy:
            (solution, *_), numpy_seconds = _timed(
                np.linalg.lstsq, matrix.numpy(), rhs.numpy(), rcond=None
            )
            numpy_cells = (
                f"{numpy_seconds:>7.2f} {_relative_error(torch.from_numpy(solution), truth):>9.1e}"
            )
        rows, columns = system.shape
        print(
            f"{name:<8} {index:>5} {f'{rows}x{columns}':>16} {lsmr_seconds:>7.2f} "
            f"{_relative_error(x, truth):>9.1e} {build_seconds:>7.2f} {gelsy_seconds:>7.2f} "
            f"{_relative_error(gelsy, truth):>9.1e} {gels_seconds:>7.2f} "
            f"{_relative_error(gels, truth):>9.1e} {numpy_cells} "
            f"{gels_seconds / lsmr_seconds:>9.1f}",
            flush=True,
        )


def _peak_resident_gib() -> float:
    """This process's peak resident memory (``VmHWM``, which, unlike ``ru_maxrss``, starts afresh
    at ``exec`` and so does not inherit the parent's peak)."""
    with open("/proc/self/status") as status:
        match = re.search(r"VmHWM:\s+(\d+) kB", status.read())
    assert match is not None
    return int(match.group(1)) / 2**20


def large_input_problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The 3x224x224 first-layer problem (seeded): a strided convolution read back through tanh,
    one image and its label."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 12, 4, stride=2, padding=2, bias=False),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(12 * 113 * 113, 10),
    )
    return model, torch.rand(1, 3, 224, 224), torch.tensor([3])


def large_input_system() -> None:
    """Run in a fresh process so that its peak memory is its own."""
    model, image, label = large_input_problem()
    loss = F.cross_entropy(model(image), label)
    gradients = torch.autograd.grad(loss, list(model.parameters()))
    baseline = _peak_resident_gib()
    reconstruction = fl_leak.reconstruct(
        model, gradients, input_shape=(3, 224, 224), attack="linear", threads=None
    )
    peak = _peak_resident_gib()
    layer = reconstruction.layers[0]
    print(
        f"{'unknowns':>9} {'rows':>8} {'iterations':>10} {'seconds':>8} {'PSNR dB':>8} "
        f"{'peak RSS GiB':>12} {'RSS before GiB':>14}"
    )
    print(
        f"{layer.unknowns:>9} {layer.forward_equations + layer.gradient_equations:>8} "
        f"{layer.iterations:>10} {reconstruction.seconds:>8.1f} "
        f"{float(psnr(reconstruction.inputs.float().clamp(0, 1), image)):>8.1f} "
        f"{peak:>12.2f} {baseline:>14.2f}",
        flush=True,
    )


def hybrid_on_deficient(images: list[int], iterations: int) -> None:
    print(f"3. hybrid on cnn3_c1 (rank-deficient), batch 1, {iterations} correction iterations")
    print(f"{'image':>5} {'linear dB':>9} {'hybrid dB':>9} {'hybrid s':>8}")
    data = load_dataset("embedded")
    model = fl_leak.build_model("cnn3_c1", seed=0, num_classes=12)
    scores = []
    for index in images:
        x, y = data[index]
        gradients = torch.autograd.grad(
            F.cross_entropy(model(x[None]), torch.tensor([y])), list(model.parameters())
        )
        linear = fl_leak.reconstruct(model, gradients, attack="linear")
        hybrid = fl_leak.reconstruct(model, gradients, attack="hybrid", iterations=iterations)
        row = [float(psnr(r.inputs.float().clamp(0, 1), x[None])) for r in (linear, hybrid)]
        scores.append((*row, hybrid.seconds))
        print(f"{index:>5} {row[0]:>9.1f} {row[1]:>9.1f} {hybrid.seconds:>8.1f}", flush=True)
    means = np.mean(np.array(scores), axis=0)
    print(f"{'mean':>5} {means[0]:>9.1f} {means[1]:>9.1f} {means[2]:>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--skip-numpy", action="store_true", help="skip np.linalg.lstsq (slow)")
    parser.add_argument("--quick", action="store_true", help="two layers, two images")
    parser.add_argument("--large-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--square-only", action="store_true", help="table 0 alone")
    parser.add_argument("--repeats", type=int, default=3, help="table 0: best of this many runs")
    parser.add_argument(
        "--hybrid-iterations", type=int, default=1000, help="hybrid's correction iterations"
    )
    args = parser.parse_args()
    if args.large_only:
        large_input_system()
        return
    square_layers(args.repeats)
    if args.square_only:
        return
    print()
    dense_versus_matrix_free(LAYERS[:2] if args.quick else LAYERS, not args.skip_numpy)
    print("\n2. 3x224x224 first-layer system (conv 3->12 k4 s2 p2), matrix-free", flush=True)
    subprocess.run([sys.executable, __file__, "--large-only"], check=True)
    print()
    images = [0, 100] if args.quick else [0, 50, 100, 150, 200, 250, 300, 350]
    hybrid_on_deficient(images, args.hybrid_iterations)


if __name__ == "__main__":
    main()
