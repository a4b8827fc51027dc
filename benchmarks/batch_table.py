"""Audit deficiency against measured recovery for batches, labels recovered (not given).

For each network and batch size: the audit's total deficiency (method: exact SVD or structural
bound) at the batch attacked (``audit(..., inputs=images, labels=labels)``: a ReLU layer's rank
depends on the data's active set, which a random probe does not represent), then the linear
attack on that batch of embedded images (distinct random images, seeded):
PSNR after Hungarian matching (minimum and mean over the batch), whether the label multiset was
recovered exactly, and seconds. Where the audit finds a deficiency, hybrid's PSNR is added.

    python benchmarks/batch_table.py [--models cnn2_c1,lenet] [--batch-sizes 1,2,4,8]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import fl_leak
from fl_leak.data import load_dataset
from fl_leak.metrics import score_batch

MODELS = "cnn2_c1,cnn2_c11,cnn2_c5,cnn3_c3,lenet,lenet2,cnn2_relu,lenet_relu"


def _score(model, gradients, images, labels, attack: str) -> tuple[float, float, bool, float]:
    start = time.perf_counter()
    reconstruction = fl_leak.reconstruct(model, gradients, batch_size=len(labels), attack=attack)
    seconds = time.perf_counter() - start
    scores = score_batch(images, reconstruction.inputs.float().clamp(0, 1))
    labels_ok = torch.equal(torch.sort(reconstruction.labels).values, torch.sort(labels).values)
    return float(scores.psnr.min()), float(scores.psnr.clamp(max=200).mean()), labels_ok, seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default=MODELS)
    parser.add_argument("--batch-sizes", default="1,2,4,8")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = load_dataset("embedded")
    generator = torch.Generator().manual_seed(args.seed)
    print(
        f"{'model':<11} {'B':>2} {'deficiency':>10} {'method':>6} {'lin min dB':>10} "
        f"{'lin mean dB':>11} {'labels':>6} {'lin s':>6} {'hyb min dB':>10} {'hyb s':>6}",
        flush=True,
    )
    for name in args.models.split(","):
        model = fl_leak.build_model(name, seed=0, num_classes=data.info.num_classes)
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            index = torch.randperm(len(data), generator=generator)[:batch_size]
            images, labels = data.images[index].float() / 255, data.labels[index]
            report = fl_leak.audit(model, batch_size=batch_size, inputs=images, labels=labels)
            deficiency = sum(layer.deficiency for layer in report.layers)
            methods = {layer.method for layer in report.layers}
            gradients = torch.autograd.grad(
                F.cross_entropy(model(images), labels), list(model.parameters())
            )
            lin_min, lin_mean, labels_ok, lin_s = _score(model, gradients, images, labels, "linear")
            hybrid = "-" * 10 + " " + "-" * 6
            if deficiency:
                hyb_min, _, _, hyb_s = _score(model, gradients, images, labels, "hybrid")
                hybrid = f"{hyb_min:>10.1f} {hyb_s:>6.1f}"
            print(
                f"{name:<11} {batch_size:>2} {deficiency:>10} {'/'.join(sorted(methods)):>6} "
                f"{lin_min:>10.1f} {lin_mean:>11.1f} {labels_ok!s:>6} {lin_s:>6.1f} {hybrid}",
                flush=True,
            )


if __name__ == "__main__":
    main()
