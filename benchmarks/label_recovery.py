"""Label recovery against batch size and training: weight + bias gradient against bias only.

For each network, number of classes (10: the embedded set's first ten classes, 320 images; 12:
all 384), batch size and training stage, over seeded batches of embedded images: the count
accuracy (share of batches whose per-class counts are all exact) of ``fl_leak.recover_labels``
(last layer's weight and bias gradients, :mod:`fl_leak.attacks.labels`) and of the bias-only
estimate it replaces, printed ``new / bias-only``. Two kinds of batch: drawn at random, and with
every class present (one image of each, the rest at random; batch sizes >= classes).

Training is FedAvg simulated in-process: each round, every client takes a few SGD steps on
batches of its own shard of the same images from the global weights, and the server averages the
clients' weights. Untrained (0 rounds) is the setting the method is built for.

    python benchmarks/label_recovery.py [--quick] [--models cnn2_c1,lenet] [--trials 20]
    python benchmarks/label_recovery.py --diagnose --batch-sizes 32,64,128 [--rounds 0]
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import fl_leak
from fl_leak.attacks.label_recovery import output_layer
from fl_leak.attacks.labels import (
    class_embeddings,
    counts_from_weight_gradient,
    estimate_label_counts,
    labels_from_counts,
    raw_counts,
)
from fl_leak.data import load_dataset


def bias_only(gradients: list[Tensor], batch_size: int) -> Tensor:
    """The estimate from the last layer's bias gradient alone (argmin for one sample)."""
    if batch_size == 1:
        return torch.argmin(gradients[-1]).reshape(1)
    return labels_from_counts(estimate_label_counts(gradients[-1], batch_size))


def batches(
    labels: Tensor, classes: int, size: int, every_class: bool, trials: int, seed: int
) -> Iterator[Tensor]:
    """Indices of ``trials`` batches of ``size`` images (one of each class first if asked)."""
    generator = torch.Generator().manual_seed(seed)
    for _ in range(trials):
        order = torch.randperm(labels.numel(), generator=generator)
        if not every_class:
            yield order[:size]
            continue
        first = torch.stack([order[labels[order] == c][0] for c in range(classes)])
        rest = order[~torch.isin(order, first)][: size - classes]
        yield torch.cat([first, rest])


def fedavg(
    model: nn.Module, images: Tensor, labels: Tensor, rounds: int, seed: int, clients: int = 2
) -> None:
    """Train ``model`` in place for ``rounds`` FedAvg rounds (5 local SGD steps of 32, lr 0.05)."""
    generator = torch.Generator().manual_seed(seed)
    shards = torch.randperm(labels.numel(), generator=generator).chunk(clients)
    for _ in range(rounds):
        states = []
        for shard in shards:
            local = copy.deepcopy(model)
            optimiser = torch.optim.SGD(local.parameters(), lr=0.05)
            for _ in range(5):
                batch = shard[torch.randperm(shard.numel(), generator=generator)[:32]]
                optimiser.zero_grad()
                F.cross_entropy(local(images[batch]), labels[batch]).backward()
                optimiser.step()
            states.append(local.state_dict())
        model.load_state_dict({k: sum(s[k] for s in states) / clients for k in states[0]})


def count_accuracy(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    classes: int,
    size: int,
    every: bool,
    trials: int,
) -> tuple[float, float]:
    """Share of batches with all counts exact: (weight + bias gradients, bias gradient only)."""
    right = torch.zeros(2)
    for index in batches(labels, classes, size, every, trials, seed=size):
        gradients = list(
            torch.autograd.grad(
                F.cross_entropy(model(images[index]), labels[index]), list(model.parameters())
            )
        )
        truth = torch.sort(labels[index]).values
        right[0] += float(torch.equal(fl_leak.recover_labels(model, gradients, size), truth))
        right[1] += float(torch.equal(bias_only(gradients, size), truth))
    return float(right[0]) / trials, float(right[1]) / trials


def diagnose(
    model: nn.Module, images: Tensor, labels: Tensor, classes: int, size: int, trials: int
) -> list[float]:
    """Means over random batches: output spread, error of the fitted mean output, largest count
    error (raw counts clipped to ``[0, B]``) from the true class means and from the implied ones,
    share of labels wrong."""
    head = [module for module in model.modules() if isinstance(module, nn.Linear)][-1]
    seen: list[Tensor] = []
    hook = head.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0].detach()))
    totals = torch.zeros(5, dtype=torch.float64)

    def clip(raw: Tensor) -> Tensor:  # as the rounding reads them: a saturated slope's 1e8 is B
        return raw.nan_to_num(0.0).clamp(0, size)

    for index in batches(labels, classes, size, False, trials, seed=size):
        seen.clear()
        loss = F.cross_entropy(model(images[index]), labels[index])
        layer = output_layer(model, torch.autograd.grad(loss, list(model.parameters())))
        embeddings, truth = seen[0].double(), torch.bincount(labels[index], minlength=classes)
        outputs = embeddings @ layer.weight.double().T
        found = counts_from_weight_gradient(layer, size)
        fitted = class_embeddings(
            layer.weight_gradient.double(), layer.bias_gradient.double(), found.double(), False
        )
        assert fitted is not None
        mean_error = (fitted[0] - embeddings.mean(0)) @ layer.weight.double().T
        present = [
            embeddings[labels[index] == c].mean(0) if truth[c] else None for c in range(classes)
        ]
        means = torch.stack([fitted[0] if m is None else m for m in present])
        implied = class_embeddings(
            layer.weight_gradient.double(), layer.bias_gradient.double(), found.double(), True
        )
        assert implied is not None
        totals += torch.tensor(
            [
                float(outputs.std(0).mean()),
                float((mean_error - mean_error.mean()).norm()),
                float((clip(raw_counts(layer, means, truth.double())) - truth).abs().max()),
                float((clip(raw_counts(layer, implied, found.double())) - truth).abs().max()),
                float((found - truth).abs().sum()) / (2 * size),
            ],
            dtype=torch.float64,
        )
    hook.remove()
    return (totals / trials).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="cnn2_c1,cnn2_c5,lenet,cnn3_c11,flower_cnn")
    parser.add_argument("--classes", default="10,12")
    parser.add_argument("--batch-sizes", default="1,2,4,8,16,32,64,128")
    parser.add_argument("--rounds", default="0,1,5,20", help="FedAvg rounds before attacking")
    parser.add_argument("--trials", type=int, default=20, help="batches per cell")
    parser.add_argument("--quick", action="store_true", help="5 batches, 2 nets, fewer cells")
    parser.add_argument("--diagnose", action="store_true", help="what limits the estimate")
    args = parser.parse_args()
    if args.quick:
        args.models, args.batch_sizes, args.rounds = "cnn2_c1,flower_cnn", "1,8,32,128", "0,5"
        args.trials = 5
    torch.set_num_threads(1)
    start = time.perf_counter()
    data = load_dataset("embedded")
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    networks = [(n, int(c)) for n in args.models.split(",") for c in args.classes.split(",")]
    trained: dict[tuple[str, int, int], tuple[nn.Module, Tensor, Tensor]] = {}

    def network(name: str, classes: int, rounds: int) -> tuple[nn.Module, Tensor, Tensor]:
        """The model after ``rounds`` FedAvg rounds, with the images and labels of its classes."""
        if (name, classes, rounds) not in trained:
            keep = data.labels < classes
            images, labels = data.images[keep].float() / 255, data.labels[keep]
            model = fl_leak.build_model(name, seed=0, num_classes=classes)
            fedavg(model, images, labels, rounds, seed=rounds)
            trained[name, classes, rounds] = model, images, labels
        return trained[name, classes, rounds]

    for rounds in (int(r) for r in args.rounds.split(",")):
        if args.diagnose:
            print(
                f"\nafter {rounds} FedAvg rounds, random batches: output spread (mean std) | error "
                "of the fitted mean output | max count error from true class means | from implied "
                "ones | share of labels wrong"
            )
            for name, classes in networks:
                model, images, labels = network(name, classes, rounds)
                for size in (b for b in sizes if b <= labels.numel()):
                    cells = diagnose(model, images, labels, classes, size, args.trials)
                    print(
                        f"{name:<11} {classes:>2} B={size:<4}"
                        + "".join(f" {v:9.4f}" for v in cells)
                    )
            continue
        for every in (False, True):
            kind = "every class present" if every else "random batches"
            print(
                f"\nafter {rounds} FedAvg rounds, {kind}: count accuracy, new / bias-only "
                f"({args.trials} batches a cell)"
            )
            print(f"{'model':<11} {'C':>2} " + " ".join(f"{'B=' + str(b):>11}" for b in sizes))
            for name, classes in networks:
                model, images, labels = network(name, classes, rounds)
                cells = []
                for size in sizes:
                    if size > labels.numel() or (every and size < classes):
                        cells.append(f"{'-':>11}")
                        continue
                    new, old = count_accuracy(
                        model, images, labels, classes, size, every, args.trials
                    )
                    cells.append(f"{new:>5.2f}/{old:<5.2f}")
                print(f"{name:<11} {classes:>2} " + " ".join(cells), flush=True)
    print(f"\n{time.perf_counter() - start:.0f} s on 1 thread")


if __name__ == "__main__":
    main()
