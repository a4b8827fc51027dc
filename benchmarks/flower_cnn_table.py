"""Flower's quickstart network (``flower_cnn``: two conv + ReLU + 2x2 max-pool stages, three FC
layers): the audit at the data and the attacks' PSNR, per batch size.

For each batch size: the first ``B`` embedded images of distinct labels from a seeded draw, the
float64 model (12 classes, seed 0), the float64 gradient of the batch-mean cross-entropy from
torch autograd (FedSGD); the audit of the model at those images (``fl_leak.audit(...,
inputs=...)``, its per-layer rows), then ``linear``, ``hybrid`` and ``ig`` on the same gradient,
each scored by PSNR (peak 1, reconstructions clamped to [0, 1], matched to the originals), with
the max-pooling diagnostics of the linear walk (windows whose maximum the solution reproduces).

    python benchmarks/flower_cnn_table.py [--quick] [--batch-sizes 1,4] [--seed 0]

``--quick``: batch 1 only, 200 correction iterations for ``hybrid``, 400 ``ig`` iterations.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import fl_leak
from fl_leak.data import load_dataset
from fl_leak.metrics.image import score_batch


def _batch(labels: torch.Tensor, batch_size: int, seed: int) -> torch.Tensor:
    """Indices of ``batch_size`` images of distinct labels, seeded."""
    generator = torch.Generator().manual_seed(1000 * seed + batch_size)
    order = torch.randperm(len(labels), generator=generator)
    chosen: list[int] = []
    for index in order.tolist():
        if all(labels[index] != labels[other] for other in chosen):
            chosen.append(index)
        if len(chosen) == batch_size:
            break
    return torch.tensor(chosen)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch-sizes", default="1,4")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--attacks", default="linear,hybrid,ig")
    args = parser.parse_args()
    batch_sizes = [1] if args.quick else [int(b) for b in args.batch_sizes.split(",")]
    options = {
        "hybrid": {"iterations": 200 if args.quick else 1000},
        "ig": {"iterations": 400} if args.quick else {},
    }
    data = load_dataset("embedded")
    shape = tuple(data.info.input_shape)
    model = fl_leak.build_model(
        "flower_cnn", input_shape=shape, num_classes=data.info.num_classes, seed=0
    ).double()
    for batch_size in batch_sizes:
        index = _batch(data.labels, batch_size, args.seed)
        images = data.images[index].double() / 255
        labels = data.labels[index]
        print(f"\n== flower_cnn, batch {batch_size}, images {index.tolist()}", flush=True)
        start = time.perf_counter()
        report = fl_leak.audit(model, shape, batch_size, inputs=images, labels=labels)
        print(report.table())
        print(f"audit: {time.perf_counter() - start:.1f} s", flush=True)
        loss = F.cross_entropy(model(images), labels)
        gradients = torch.autograd.grad(loss, list(model.parameters()))
        for attack in args.attacks.split(","):
            rec = fl_leak.reconstruct(
                model,
                gradients,
                input_shape=shape,
                batch_size=batch_size,
                attack=attack,
                **options.get(attack, {}),
            )
            scores = score_batch(images, rec.inputs.double().clamp(0, 1))
            pools = [
                f"layer {layer.index}: {layer.pool_consistent}/{layer.pool_windows} windows"
                for layer in rec.layers
                if layer.pool_windows
            ]
            print(
                f"{attack:>7}: PSNR {float(scores.psnr.mean()):6.2f} dB "
                f"(min {float(scores.psnr.min()):6.2f}), "
                f"{rec.seconds:6.1f} s"
                + (f"; max-pool positions consistent: {', '.join(pools)}" if pools else ""),
                flush=True,
            )


if __name__ == "__main__":
    main()
