"""Does the audit's conditioning predict how fast the linear attack degrades with update noise?

For full-rank networks of the family (batch 1, float64), Gaussian noise of relative level ``sigma``
(times each gradient tensor's RMS) is added to the true gradients and the linear attack's PSNR is
measured (mean over the chosen embedded images). The prediction uses only the audit of the model
(probe input, no data): a least-squares error grows like ``sigma`` times the condition number of
the system it solves, so

    predicted PSNR = -20 log10(sigma * kappa) + c,

with ``kappa`` one of three summaries of the audit's per-layer condition numbers (the input
layer's, the largest, the product) and one constant ``c`` fitted over every network and level
where the attack is neither exact (> 100 dB) nor lost (< 8 dB). It prints the table, the fit's RMS
error in dB for each summary, and draws predicted against measured PSNR.

    python benchmarks/noise_vs_conditioning.py [--models cnn2_c1,cnn2_c5] [--out plot.png]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

import fl_leak
from fl_leak.data import load_dataset
from fl_leak.metrics import psnr

MODELS = "cnn2_c1,cnn2_c11,cnn2_c5,lenet,lenet2,cnn3_c3"
LEVELS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
FIT_RANGE = (8.0, 100.0)  # dB: between lost and exact


def _summaries(conditions: list[float]) -> dict[str, float]:
    return {
        "input layer": conditions[0],
        "largest": max(conditions),
        "product": math.prod(conditions),
    }


def _noisy(
    gradients: list[torch.Tensor], level: float, generator: torch.Generator
) -> list[torch.Tensor]:
    """Each tensor plus Gaussian noise of std ``level`` times the tensor's RMS."""
    noise = [torch.randn(g.shape, generator=generator, dtype=g.dtype) for g in gradients]
    return [g + level * g.pow(2).mean().sqrt() * n for g, n in zip(gradients, noise, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default=MODELS)
    parser.add_argument("--images", default="0,100", help="embedded train indices")
    parser.add_argument("--out", type=Path, default=Path("noise_vs_conditioning.png"))
    args = parser.parse_args()
    data = load_dataset("embedded")
    indices = [int(i) for i in args.images.split(",")]
    rows = []  # (model, level, measured dB, {summary: kappa})
    print(f"{'model':<10} {'kappa in':>9} {'largest':>9} {'product':>9} {'sigma':>7} {'PSNR':>7}")
    for name in args.models.split(","):
        model = fl_leak.build_model(name, seed=0, num_classes=12).double()
        report = fl_leak.audit(model, (3, 32, 32), batch_size=1)
        if not report.full_rank:
            print(f"{name:<10} skipped: the audit finds a deficiency")
            continue
        kappas = _summaries([layer.condition for layer in report.layers])
        for level in LEVELS:
            scores = []
            for index in indices:
                image = data.images[index : index + 1].double() / 255
                label = data.labels[index : index + 1]
                loss = F.cross_entropy(model(image), label)
                gradients = torch.autograd.grad(loss, list(model.parameters()))
                generator = torch.Generator().manual_seed(index)
                noisy = _noisy([g.detach() for g in gradients], level, generator)
                result = fl_leak.reconstruct(model, noisy, attack="linear")
                scores.append(min(float(psnr(image, result.inputs.clamp(0, 1))), 200.0))
            measured = float(np.mean(scores))
            rows.append((name, level, measured, kappas))
            print(
                f"{name:<10} {kappas['input layer']:>9.2e} {kappas['largest']:>9.2e} "
                f"{kappas['product']:>9.2e} {level:>7.0e} {measured:>7.1f}",
                flush=True,
            )
    fitted = [row for row in rows if FIT_RANGE[0] < row[2] < FIT_RANGE[1]]
    print(f"\nfit over {len(fitted)} points with {FIT_RANGE[0]} < PSNR < {FIT_RANGE[1]} dB:")
    best = None
    for summary in ("input layer", "largest", "product"):
        base = np.array([-20 * math.log10(level * k[summary]) for _, level, _, k in fitted])
        measured = np.array([row[2] for row in fitted])
        constant = float(np.mean(measured - base))
        rms = float(np.sqrt(np.mean((base + constant - measured) ** 2)))
        print(f"  kappa = {summary:<12} c = {constant:7.1f} dB   RMS error {rms:5.1f} dB")
        if best is None or rms < best[2]:
            best = (summary, constant, rms)
    if best is None:
        return
    summary, constant, rms = best
    print(f"mean residual per network (measured - predicted, kappa = {summary}):")
    for name in dict.fromkeys(row[0] for row in fitted):
        residuals = [
            measured - (-20 * math.log10(level * k[summary]) + constant)
            for model, level, measured, k in fitted
            if model == name
        ]
        print(f"  {name:<10} {np.mean(residuals):7.1f} dB over {len(residuals)} levels")
    figure = Figure(figsize=(5.5, 4.5), layout="constrained")
    ax = figure.subplots()
    for name in dict.fromkeys(row[0] for row in rows):
        points = [row for row in rows if row[0] == name]
        predicted = [-20 * math.log10(level * k[summary]) + constant for _, level, _, k in points]
        ax.scatter(predicted, [row[2] for row in points], label=name)
    ax.axline((0, 0), slope=1, color="grey", lw=0.8)
    ax.axhspan(*FIT_RANGE, color="grey", alpha=0.08, label="fitted range")
    ax.set_xlabel(f"predicted PSNR (dB): -20 log10(sigma kappa) + {constant:.0f}, kappa: {summary}")
    ax.set_ylabel("measured PSNR (dB), linear attack")
    ax.set_title(f"update noise vs audit conditioning (RMS {rms:.1f} dB)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    figure.savefig(args.out, dpi=120)
    print(f"plot: {args.out}")


if __name__ == "__main__":
    main()
