"""Label recovery against batch size on untrained networks of the family.

For each network and batch size, over seeded random batches of embedded images (12 classes, so
batches up to 64 repeat classes): the fraction of batches whose label multiset is recovered
exactly, and the mean fraction of per-class counts that are right, for the bias-gradient estimate
alone and after the last layer's self-consistency refinement (batch sizes up to the number of
classes, where the last layer's inputs are determined).

    python benchmarks/label_recovery.py [--models cnn2_c1,lenet] [--trials 20]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

import fl_leak
from fl_leak.attacks.labels import estimate_label_counts, labels_from_counts
from fl_leak.attacks.linear.chain import parse_chain
from fl_leak.attacks.linear.last_layer import solve_last_layer_and_labels
from fl_leak.attacks.linear.walk import last_layer_of
from fl_leak.data import load_dataset


def _count_accuracy(recovered: torch.Tensor, truth: torch.Tensor, classes: int) -> float:
    return float(
        (torch.bincount(recovered, minlength=classes) == torch.bincount(truth, minlength=classes))
        .double()
        .mean()
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="cnn2_c1,cnn3_c11,lenet,cnn6d")
    parser.add_argument("--batch-sizes", default="1,2,4,8,16,32,64")
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    data = load_dataset("embedded")
    classes = data.info.num_classes
    generator = torch.Generator().manual_seed(0)
    print(
        f"{'model':<10} {'B':>3} {'exact (g)':>9} {'counts (g)':>10} {'exact (refined)':>15} "
        f"{'counts (refined)':>16}",
        flush=True,
    )
    for name in args.models.split(","):
        model = fl_leak.build_model(name, seed=0, num_classes=classes)
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            totals = torch.zeros(4, dtype=torch.float64)
            refine = batch_size <= classes
            for _ in range(args.trials):
                index = torch.randperm(len(data), generator=generator)[:batch_size]
                images, labels = data.images[index].float() / 255, data.labels[index]
                gradients = torch.autograd.grad(
                    F.cross_entropy(model(images), labels), list(model.parameters())
                )
                chain = parse_chain(model, gradients, (3, 32, 32))
                truth = torch.sort(labels).values
                first = labels_from_counts(
                    estimate_label_counts(chain.last.bias_gradient, batch_size)
                )
                totals[0] += float(torch.equal(first, truth))
                totals[1] += _count_accuracy(first, truth, classes)
                if refine:
                    _, refined = solve_last_layer_and_labels(last_layer_of(chain), first)
                    totals[2] += float(torch.equal(refined.cpu(), truth))
                    totals[3] += _count_accuracy(refined.cpu(), truth, classes)
            rates = totals / args.trials
            refined_cells = (
                f"{rates[2]:>15.2f} {rates[3]:>16.3f}" if refine else f"{'-':>15} {'-':>16}"
            )
            print(
                f"{name:<10} {batch_size:>3} {rates[0]:>9.2f} {rates[1]:>10.3f} {refined_cells}",
                flush=True,
            )


if __name__ == "__main__":
    main()
