"""Time of the linear attack against batch size, matrix-free against dense solves.

For each network and batch size B: a seeded batch of B distinct embedded images, gradients from
autograd, labels recovered from the gradients (not given); then the linear attack's layerwise
walk (matrix-free LSMR) is timed, and, side by side, each of its layer systems (below the last
layer, whose solve both share) is materialised (``LayerSystem.dense``) and solved densely with
``torch.linalg.lstsq(driver="gels")`` (QR; the only driver on CUDA), as long as the dense matrix
fits under ``--max-dense-gb``. Columns:

* ``unknowns``: unknowns of the layer systems below the last (B x input size for cnn2 networks);
* ``walk s``: the whole matrix-free attack (label recovery, last layer, layer solves);
* ``mf s``: the matrix-free solves of the layer systems below the last;
* ``dense s``: materialising and solving the same systems densely (``n/a`` with the matrix's
  size where it exceeds the cap);
* ``ratio``: dense s / mf s;
* ``PSNR min``: the matrix-free reconstruction's worst image after matching (dB);
* ``labels``: whether the recovered label multiset is right;
* ``last s``: walk s less mf s: label recovery and the last layer's solve (Levenberg-Marquardt on
  the row-space coefficients for B > 1);
* ``solves``: each layer below the last: its solver and iterations.

A last line per network fits ``seconds ~ B^k`` (least squares on logarithms) for the walk, for
the layer solves below the last (``mf``) and,
where at least two batch sizes had a dense solve, for the dense solves.

    python benchmarks/batch_timing.py [--models cnn2_c1,cnn2_c5] [--batch-sizes 1,2,4,8,16]
        [--device cpu|cuda] [--max-dense-gb 1.0] [--lsmr-up-to 4]
"""

from __future__ import annotations

import argparse
import math
import subprocess
import time

import numpy as np
import torch
import torch.nn.functional as F
from bench_solver import _timed

import fl_leak
from fl_leak.attacks.linear.attack import LinearOptions, run_walk
from fl_leak.attacks.linear.solver import SolverOptions, solve_layer
from fl_leak.data import load_dataset
from fl_leak.metrics import score_batch
from fl_leak.threads import torch_threads


def dense_solves(systems, max_bytes: float, device: str) -> tuple[float | None, str]:
    """Seconds to materialise and solve every system densely (gels), or None and why not."""
    sizes = [math.prod(system.shape) * 8 for system in systems]
    if max(sizes, default=0) > max_bytes:
        return None, f"n/a (too large: {max(sizes) / 2**30:.1f} GB)"
    seconds = 0.0
    for system in systems:
        matrix, build = _timed(system.dense)
        rhs = system.rhs().reshape(-1, 1)
        _, solve = _timed(torch.linalg.lstsq, matrix, rhs, driver="gels")
        if device == "cuda":
            torch.cuda.synchronize()
        seconds += build + solve
        del matrix
    return seconds, f"{seconds:.2f}"


def fitted_exponent(batch_sizes: list[int], seconds: list[float]) -> float:
    """``k`` of the least-squares fit ``log s = k log B + c``."""
    return float(np.polyfit(np.log(batch_sizes), np.log(seconds), 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="cnn2_c1,cnn2_c5")
    parser.add_argument("--batch-sizes", default="1,2,4,8,16")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--max-dense-gb", type=float, default=1.0, help="largest dense matrix to materialise"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads for the matrix-free walk"
    )
    parser.add_argument(
        "--lsmr-up-to",
        type=int,
        default=0,
        help="also solve the layer systems by plain LSMR (method='lsmr') up to this batch size",
    )
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device available")
    data = load_dataset("embedded")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(
        f"{load}\ndevice {args.device}, torch threads {torch.get_num_threads()} "
        f"(walk: {args.threads}), "
        f"dense cap {args.max_dense_gb:g} GB",
        flush=True,
    )
    header = (
        f"{'model':<8} {'B':>3} {'unknowns':>8} {'walk s':>7} {'mf s':>7} {'dense s':>26} "
        f"{'ratio':>6} {'PSNR min':>8} {'labels':>6} {'last s':>6}  solves"
    )
    print(header, flush=True)
    for name in args.models.split(","):
        model = fl_leak.build_model(name, seed=0, num_classes=data.info.num_classes)
        generator = torch.Generator().manual_seed(args.seed)
        walk_times, solve_times, dense_times = [], [], []
        for batch_size in batch_sizes:
            index = torch.randperm(len(data), generator=generator)[:batch_size]
            images, labels = data.images[index].float() / 255, data.labels[index]
            gradients = torch.autograd.grad(
                F.cross_entropy(model(images), labels), list(model.parameters())
            )
            start = time.perf_counter()
            options = LinearOptions(threads=args.threads, device=args.device)
            _, result, found, _ = run_walk(model, gradients, (3, 32, 32), batch_size, None, options)
            walk_seconds = time.perf_counter() - start
            matrix_free = sum(layer.seconds for layer in result.layers[:-1])
            dense, dense_cell = dense_solves(result.systems, args.max_dense_gb * 2**30, args.device)
            ratio = f"{dense / matrix_free:.1f}" if dense is not None else "-"
            if batch_size <= args.lsmr_up_to:
                with torch_threads(args.threads):
                    lsmr_seconds, lsmr_iterations = 0.0, []
                    for system in result.systems:
                        (_, report), seconds = _timed(
                            solve_layer, system, SolverOptions(method="lsmr")
                        )
                        lsmr_seconds += seconds
                        lsmr_iterations.append(str(report.iterations))
                print(
                    f"{name:<8} {batch_size:>3} plain LSMR on the same systems: "
                    f"{lsmr_seconds:.2f} s ({', '.join(lsmr_iterations)} iterations), "
                    f"{lsmr_seconds / matrix_free:.1f}x the time of mf",
                    flush=True,
                )
            scores = score_batch(images, result.inputs[0].detach().cpu().float().clamp(0, 1))
            labels_ok = torch.equal(torch.sort(found.cpu()).values, torch.sort(labels).values)
            unknowns = sum(system.num_unknowns for system in result.systems)
            solves = ", ".join(f"{layer.solver} {layer.iterations}" for layer in result.layers[:-1])
            print(
                f"{name:<8} {batch_size:>3} {unknowns:>8} {walk_seconds:>7.2f} "
                f"{matrix_free:>7.2f} {dense_cell:>26} {ratio:>6} "
                f"{float(scores.psnr.min()):>8.1f} {labels_ok!s:>6} "
                f"{walk_seconds - matrix_free:>6.2f}  {solves}",
                flush=True,
            )
            walk_times.append(walk_seconds)
            solve_times.append(matrix_free)
            dense_times.append(dense)
        fit = f"walk ~ B^{fitted_exponent(batch_sizes, walk_times):.2f}"
        fit += f", mf ~ B^{fitted_exponent(batch_sizes, solve_times):.2f}"
        dense_points = [(b, s) for b, s in zip(batch_sizes, dense_times, strict=True) if s]
        if len(dense_points) >= 2:
            sizes, seconds = zip(*dense_points, strict=True)
            fit += f", dense ~ B^{fitted_exponent(list(sizes), list(seconds)):.2f}"
            fit += f" (B = {', '.join(str(b) for b in sizes)})"
        print(f"{name:<8} fitted growth over B = {args.batch_sizes}: {fit}", flush=True)


if __name__ == "__main__":
    main()
