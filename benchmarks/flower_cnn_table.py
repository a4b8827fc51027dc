"""Flower's quickstart network (``flower_cnn``: two conv + ReLU + 2x2 max-pool stages, three FC
layers): the audit at the data, how well the linear walk recovers each layer's input, and the
attacks' PSNR, per batch size.

For each batch size and seed: the first ``B`` embedded images of distinct labels from a seeded
draw, the float64 model (12 classes, seed 0), the float64 gradient of the batch-mean cross-entropy
from torch autograd (FedSGD); the audit of the model at those images (``fl_leak.audit(...,
inputs=...)``, its per-layer rows); the linear walk's reconstruction of every layer's input
against the true one (relative error ``||x_rec - x|| / ||x||``, samples matched on the last
layer's input; for a max-pooling layer also the windows whose maximum the walk put at the true
position); then ``linear``, ``hybrid`` and ``ig`` on the same gradient, each scored by PSNR (peak
1, reconstructions clamped to [0, 1], matched to the originals).

    python benchmarks/flower_cnn_table.py [--quick] [--batch-sizes 1,4] [--seeds 0,1,2]

``--quick``: batch 1 only, 200 correction iterations for ``hybrid``, 400 ``ig`` iterations.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import fl_leak
from fl_leak.attacks.linear.attack import LinearOptions, run_walk
from fl_leak.attacks.linear.walk import WalkResult
from fl_leak.data import load_dataset
from fl_leak.metrics.audit import LayerProbe, probe_layers
from fl_leak.metrics.image import match_reconstructions, score_batch


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


def _as_images(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], 1, 1, -1)


@dataclass(frozen=True)
class LayerRecovery:
    """How well the walk recovered one layer's input: relative error against the true input and,
    for a max-pooling layer, the windows with a gradient whose maximum it put at the true
    position (``placed`` of ``windows``; both None for a layer that does not pool)."""

    index: int
    error: float
    placed: int | None = None
    windows: int | None = None

    def row(self) -> str:
        text = f"  layer {self.index} input: relative error {self.error:.1e}"
        if self.windows is not None:
            text += (
                f"; maxima placed right in {self.placed} of {self.windows} windows with a gradient"
            )
        return text


def layer_recovery(walked: WalkResult, truth: LayerProbe) -> list[LayerRecovery]:
    """Per layer below the last: the walk's input against the true one (samples matched on the
    last layer's input, where the walk is exact when that layer is full rank)."""
    order = torch.from_numpy(
        match_reconstructions(_as_images(truth.inputs[-1]), _as_images(walked.inputs[-1]))
    )
    rows = []
    for index, block in enumerate(truth.blocks[:-1]):
        true_in = truth.inputs[index]
        rec_in = walked.inputs[index][order].reshape(true_in.shape)
        error = float((rec_in - true_in).norm() / true_in.norm())
        if block.pool is None:
            rows.append(LayerRecovery(index, error))
            continue
        true_maxima = truth.systems[index].output_gradient != 0
        chosen = walked.systems[index].output_gradient[order] != 0
        placed = int((chosen & true_maxima).sum())
        rows.append(LayerRecovery(index, error, placed, int(true_maxima.sum())))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch-sizes", default="1,4")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--attacks", default="hybrid,ig")
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
        for seed in (int(s) for s in args.seeds.split(",")):
            index = _batch(data.labels, batch_size, seed)
            images = data.images[index].double() / 255
            labels = data.labels[index]
            print(f"\n== flower_cnn, batch {batch_size}, images {index.tolist()}", flush=True)
            start = time.perf_counter()
            report = fl_leak.audit(model, shape, batch_size, inputs=images, labels=labels)
            print(report.table())
            print(f"audit: {time.perf_counter() - start:.1f} s", flush=True)
            loss = F.cross_entropy(model(images), labels)
            gradients = torch.autograd.grad(loss, list(model.parameters()))
            start = time.perf_counter()
            _, walked, _, _ = run_walk(model, gradients, shape, batch_size, None, LinearOptions())
            seconds = time.perf_counter() - start
            truth = probe_layers(model, shape, batch_size, inputs=images, labels=labels)
            print("\n".join(row.row() for row in layer_recovery(walked, truth)))
            linear = score_batch(images, walked.inputs[0].double().clamp(0, 1))
            print(
                f" linear: PSNR {float(linear.psnr.mean()):6.2f} dB "
                f"(min {float(linear.psnr.min()):6.2f}), {seconds:6.1f} s",
                flush=True,
            )
            for attack in filter(None, args.attacks.split(",")):
                rec = fl_leak.reconstruct(
                    model,
                    gradients,
                    input_shape=shape,
                    batch_size=batch_size,
                    attack=attack,
                    **options.get(attack, {}),
                )
                scores = score_batch(images, rec.inputs.double().clamp(0, 1))
                print(
                    f"{attack:>7}: PSNR {float(scores.psnr.mean()):6.2f} dB "
                    f"(min {float(scores.psnr.min()):6.2f}), {rec.seconds:6.1f} s",
                    flush=True,
                )


if __name__ == "__main__":
    main()
