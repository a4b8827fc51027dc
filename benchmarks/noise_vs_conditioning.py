"""How well does the model predict the linear attack's PSNR under update noise?

For full-rank networks of the family (batch 1, float64), Gaussian noise of relative level ``sigma``
(times each gradient tensor's RMS) is added to the true gradients and the linear attack's PSNR is
measured (mean over the chosen embedded images), with the noise-aware solve (the default, less the
final shrinkage towards grey, which the prediction does not model: ``shrink=False``) and, for
comparison, the plain least-squares solve (``noise_aware=False``). The prediction
(:mod:`fl_leak.metrics.noise_prediction`) uses the model's weighted systems at a random probe input
(their singular values) and two statistics of each image (mean square, flat-image error), no
fitted constant; like the measurement, it is the mean of the images' PSNRs. It prints predicted
against measured PSNR per network and level, the RMS error in dB, and draws them.

    python benchmarks/noise_vs_conditioning.py [--models cnn2_c1,cnn2_c5] [--out plot.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

import fl_leak
from fl_leak.data import load_dataset
from fl_leak.metrics import psnr
from fl_leak.metrics.image_statistics import ImageStatistics
from fl_leak.metrics.noise_prediction import layer_spectra, predict_psnr

MODELS = "cnn2_c1,cnn2_c11,cnn2_c5,lenet,lenet2,cnn3_c3"
LEVELS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)


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
    parser.add_argument("--levels", default=",".join(f"{v:g}" for v in LEVELS))
    parser.add_argument("--out", type=Path, default=Path("noise_vs_conditioning.png"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("embedded")
    indices = [int(i) for i in args.images.split(",")]
    statistics = ImageStatistics.each(data.images[indices].double() / 255)
    rows = []  # (model, level, predicted dB, measured dB, plain least squares dB)
    print(f"{'model':<10} {'sigma':>7} {'predicted':>9} {'measured':>9} {'plain LS':>9}")
    for name in args.models.split(","):
        model = fl_leak.build_model(name, seed=0, num_classes=12).double()
        spectra = layer_spectra(model, (3, 32, 32))
        for level in (float(v) for v in args.levels.split(",")):
            scores: dict[bool, list[float]] = {True: [], False: []}
            for index in indices:
                image = data.images[index : index + 1].double() / 255
                label = data.labels[index : index + 1]
                loss = F.cross_entropy(model(image), label)
                gradients = torch.autograd.grad(loss, list(model.parameters()))
                generator = torch.Generator().manual_seed(index)
                noisy = _noisy([g.detach() for g in gradients], level, generator)
                for aware in (True, False):
                    result = fl_leak.reconstruct(
                        model, noisy, attack="linear", noise_aware=aware, shrink=False
                    )
                    score = float(psnr(image, result.inputs.clamp(0, 1)))
                    scores[aware].append(min(score, 200.0))
            predicted = predict_psnr(spectra, level, statistics, classes=12)
            measured, plain = float(np.mean(scores[True])), float(np.mean(scores[False]))
            rows.append((name, level, predicted, measured, plain))
            print(
                f"{name:<10} {level:>7.0e} {predicted:>9.1f} {measured:>9.1f} {plain:>9.1f}",
                flush=True,
            )
    errors = np.array([row[2] - row[3] for row in rows])
    rms = float(np.sqrt(np.mean(errors**2)))
    print(f"\nRMS error of the prediction over {len(rows)} points: {rms:.1f} dB")
    for name in dict.fromkeys(row[0] for row in rows):
        own = np.array([row[2] - row[3] for row in rows if row[0] == name])
        print(f"  {name:<10} RMS {np.sqrt(np.mean(own**2)):5.1f} dB, mean {np.mean(own):6.1f} dB")
    figure = Figure(figsize=(5.5, 4.5), layout="constrained")
    ax = figure.subplots()
    for name in dict.fromkeys(row[0] for row in rows):
        points = [row for row in rows if row[0] == name]
        ax.scatter([row[2] for row in points], [row[3] for row in points], label=name)
    ax.axline((0, 0), slope=1, color="grey", lw=0.8)
    ax.set_xlabel("predicted PSNR (dB), from the model's weighted systems")
    ax.set_ylabel("measured PSNR (dB), noise-aware linear attack")
    ax.set_title(f"update noise: predicted vs measured (RMS {rms:.1f} dB)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    figure.savefig(args.out, dpi=120)
    print(f"plot: {args.out}")


if __name__ == "__main__":
    main()
