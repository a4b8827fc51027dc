"""Linear against hybrid over the paper's whole family at batch 1, with the audit beside them.

Prints one row per network: audit index and whether every layer is full rank, then PSNR and
seconds of ``linear`` and ``hybrid`` (mean over the chosen embedded images, reconstructions clamped
to [0, 1], peak 1).

    python benchmarks/family_table.py [--images 0,100,200] [--models cnn2_c1,cnn3_c1]
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

import fl_leak
from fl_leak.data import load_dataset
from fl_leak.metrics import psnr
from fl_leak.metrics.audit import audit
from fl_leak.models.family import FAMILY


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", default="0,100,200", help="embedded train indices")
    parser.add_argument("--models", default=",".join(FAMILY), help="default: the paper's family")
    parser.add_argument("--seed", type=int, default=0, help="model initialisation seed")
    args = parser.parse_args()
    data = load_dataset("embedded")
    images = [int(i) for i in args.images.split(",")]
    print(
        f"{'model':<10} {'index':>6} {'full':>5} {'audit s':>7} {'linear dB':>9} {'lin s':>6} "
        f"{'hybrid dB':>9} {'hyb s':>6} {'labels':>6}",
        flush=True,
    )
    for name in args.models.split(","):
        model = fl_leak.build_model(name, seed=args.seed)
        start = time.perf_counter()
        report = audit(model)
        audit_seconds = time.perf_counter() - start
        scores: dict[str, list[float]] = {"linear": [], "hybrid": []}
        seconds: dict[str, list[float]] = {"linear": [], "hybrid": []}
        correct_labels = 0
        for index in images:
            x, y = data[index]
            x = x[None]
            loss = F.cross_entropy(model(x), torch.tensor([y]))
            gradients = torch.autograd.grad(loss, list(model.parameters()))
            for attack in scores:
                rec = fl_leak.reconstruct(model, gradients, attack=attack)
                scores[attack].append(float(psnr(rec.inputs.float().clamp(0, 1), x)))
                seconds[attack].append(rec.seconds)
                correct_labels += int(rec.labels[0] == y) if attack == "linear" else 0

        def mean(values: list[float]) -> float:
            finite = [min(v, 200.0) for v in values if not math.isnan(v)]
            return sum(finite) / len(finite)

        print(
            f"{name:<10} {report.index:>6} {report.full_rank!s:>5} {audit_seconds:>7.1f} "
            f"{mean(scores['linear']):>9.1f} {mean(seconds['linear']):>6.2f} "
            f"{mean(scores['hybrid']):>9.1f} {mean(seconds['hybrid']):>6.2f} "
            f"{correct_labels}/{len(images):>4}",
            flush=True,
        )


if __name__ == "__main__":
    main()
