"""Time to a given PSNR: ``hybrid`` against ``ig`` on the same update, side by side.

For each network and embedded image (batch 1, labels recovered by both attacks) the script records
PSNR against wall-clock time along each run: for ``ig`` after every 10th iteration through its
``callback`` (its default options, the full 4,800 iterations unless ``--ig-iterations``); for
``hybrid`` the linear solve alone (``linear``), then the solve plus a correction of increasing
length (one run per length: the correction keeps its best iterate, so a run of ``n`` iterations is
the curve at ``n``). It prints, per threshold (30 dB and ``ig``'s final PSNR), the first time each
attack reached it and the ratio, then each attack's final PSNR and total seconds, and the highest
PSNR ``ig`` passed through on the way (it can pass a target early and leave it again as the total
variation term reshapes the image; what it returns is its iterate of lowest objective).
Reconstructions are clamped to [0, 1] and scored with peak 1.

    python benchmarks/bench_hybrid_vs_ig.py [--models cnn3_c1,cnn2_c2] [--images 0,96,192,288]
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
from torch import Tensor

import fl_leak
from fl_leak.attacks.baselines.common import Progress
from fl_leak.data import load_dataset
from fl_leak.metrics import psnr

Curve = list[tuple[float, float]]  # (seconds, PSNR) along a run
CORRECTION_LENGTHS = (25, 50, 100, 200, 400, 1000)
EVERY = 10  # ig iterations between two points of its curve


def _score(reconstruction: Tensor, original: Tensor) -> float:
    return float(psnr(reconstruction.double().clamp(0, 1), original))


def hybrid_curve(model, gradients, original) -> Curve:
    """The solve alone, then the solve with corrections of increasing length (``hybrid``)."""
    solve = fl_leak.reconstruct(model, gradients, attack="linear", threads=None)
    curve = [(solve.seconds, _score(solve.inputs, original))]
    for length in CORRECTION_LENGTHS:
        rec = fl_leak.reconstruct(
            model, gradients, attack="hybrid", iterations=length, threads=None
        )
        curve.append((rec.seconds, _score(rec.inputs, original)))
        if not rec.layers[0].corrected:  # every layer full rank: no correction to lengthen
            break
    return curve


def ig_curve(model, gradients, original, iterations: int) -> tuple[Curve, float, float]:
    """PSNR along an ``ig`` run; also its final PSNR and total seconds."""
    curve: Curve = []

    def record(progress: Progress) -> None:
        if progress.iteration % EVERY == 0:
            curve.append((progress.seconds, _score(progress.inputs, original)))

    rec = fl_leak.reconstruct(
        model,
        gradients,
        attack="ig",
        iterations=iterations,
        callback=record,
        log_every=None,
        threads=None,  # the count --threads set
    )
    final = _score(rec.inputs, original)
    curve.append((rec.seconds, final))  # what it returns: the best-objective iterate, at the end
    return curve, final, rec.seconds


def first_time(curve: Curve, threshold: float) -> float:
    """Shortest time at which the curve is at ``threshold`` dB or above (``inf`` if never)."""
    return min((seconds for seconds, value in curve if value >= threshold), default=math.inf)


def _seconds(value: float) -> str:
    return "never" if math.isinf(value) else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="cnn3_c1,cnn2_c2,cnn2_c1")
    parser.add_argument("--images", default="0,96,192,288", help="embedded train indices")
    parser.add_argument("--ig-iterations", type=int, default=4800)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("embedded")
    print(
        f"{'model':<8} {'image':>5} {'target dB':>9} {'hybrid s':>8} {'ig s':>6} {'ig/hybrid':>9} "
        f"{'hybrid dB':>9} {'hybrid total s':>14} {'ig dB':>6} {'ig total s':>10} "
        f"{'ig peak dB':>10}",
        flush=True,
    )
    for name in args.models.split(","):
        model = fl_leak.build_model(name, num_classes=data.info.num_classes, seed=0)
        for index in (int(i) for i in args.images.split(",")):
            x, y = data[index]
            x = x[None]
            loss = F.cross_entropy(model(x), torch.tensor([y]))
            gradients = [g.detach() for g in torch.autograd.grad(loss, list(model.parameters()))]
            hybrid = hybrid_curve(model, gradients, x)
            ig, ig_final, ig_total = ig_curve(model, gradients, x, args.ig_iterations)
            (hybrid_total, hybrid_final), ig_peak = hybrid[-1], max(v for _, v in ig)
            for target in (30.0, ig_final):
                t_hybrid, t_ig = first_time(hybrid, target), first_time(ig, target)
                ratio = t_ig / t_hybrid if math.isfinite(t_hybrid + t_ig) else math.nan
                print(
                    f"{name:<8} {index:>5} {target:>9.1f} {_seconds(t_hybrid):>8} "
                    f"{_seconds(t_ig):>6} {ratio:>9.1f} {hybrid_final:>9.1f} {hybrid_total:>14.2f} "
                    f"{ig_final:>6.1f} {ig_total:>10.1f} {ig_peak:>10.1f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
