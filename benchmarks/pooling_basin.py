"""How close to the true layer input the max-pooling position search must start to settle.

``flower_cnn`` (12 classes, seed 0, float64), one embedded image, FedSGD gradient from autograd.
For its layer 1 (conv 16 k5, ReLU, max-pool 2), full rank at the data's own positions: the
relative gap between the two largest pre-activations of each active window at the true input
(how much error flips a maximum), the condition number of the scaled system at the true
positions (dense SVD), the solve's relative error with one window's maximum moved to another
entry (``--trials`` random windows), and then, from the true layer input plus Gaussian noise of
relative size ``eps``: the windows whose maximum the perturbed input puts at the true position,
and the relative error and right windows after ``--rounds`` solves of the fixed-point search
(:func:`fl_leak.attacks.linear.pooling.solve_pooled`'s iteration: solve at the positions, re-read
them from the solution).

    python benchmarks/pooling_basin.py [--image 37] [--rounds 15] [--eps 1e-3,1e-2,1e-1]
        [--trials 5]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

import fl_leak
from fl_leak.attacks.linear.pooling import pooled_system
from fl_leak.attacks.linear.solver import solve_layer
from fl_leak.data import load_dataset
from fl_leak.metrics.audit import probe_layers


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image", type=int, default=37)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--eps", default="1e-3,1e-2,1e-1")
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("embedded")
    shape = tuple(data.info.input_shape)
    model = fl_leak.build_model(
        "flower_cnn", input_shape=shape, num_classes=data.info.num_classes, seed=0
    ).double()
    images = data.images[[args.image]].double() / 255
    labels = data.labels[[args.image]]
    truth = probe_layers(model, shape, 1, inputs=images, labels=labels)
    block, true_system, x_true = truth.blocks[1], truth.systems[1], truth.inputs[1]
    pool, operator = block.pool, block.operator
    assert pool is not None
    z = operator.add_bias(operator.forward(x_true))
    positions = pool.positions(z)
    pooled = block.output(z)
    inversion = block.activation.inverse(pooled)
    pooled_gradient = pool.select(true_system.output_gradient, positions)
    relevant = inversion.valid | (pooled_gradient != 0)
    windows = F.unfold(z.reshape(-1, 1, *z.shape[2:]), 2, stride=2).topk(2, dim=1).values
    active = windows[:, 0] > 0
    gap = ((windows[:, 0] - windows[:, 1]) / windows[:, 0])[active]
    quantiles = torch.quantile(gap, torch.tensor([0.0, 0.01, 0.1, 0.5], dtype=gap.dtype))
    print(
        f"image {args.image}, layer 1: {int(relevant.sum())} windows; relative gap of the two "
        "largest entries (min, 1%, 10%, median): " + ", ".join(f"{float(q):.1e}" for q in quantiles)
    )
    system = pooled_system(block, positions, inversion, pooled_gradient)
    values = torch.linalg.svdvals(system.dense())
    x, report = solve_layer(system)
    print(
        f"at the true positions: condition {float(values[0] / values[-1]):.1f}, solve's relative "
        f"error {float((x - x_true).norm() / x_true.norm()):.1e}"
    )
    generator = torch.Generator().manual_seed(0)
    candidates = relevant.nonzero()
    errors = []
    for _ in range(args.trials):  # one window's maximum moved to another entry of its window
        moved = positions.clone()
        b, c, i, j = candidates[torch.randint(len(candidates), (1,), generator=generator)][0]
        width = z.shape[-1]
        row, column = divmod(int(moved[b, c, i, j]), width)
        moved[b, c, i, j] = (row ^ 1) * width + column  # the other row of the 2x2 window
        x, _ = solve_layer(pooled_system(block, moved, inversion, pooled_gradient))
        errors.append(float((x - x_true).norm() / x_true.norm()))
    print(
        f"one window's maximum moved ({args.trials} trials): solve's relative error "
        + ", ".join(f"{e:.1e}" for e in errors)
    )
    for eps in (float(e) for e in args.eps.split(",")):
        noise = torch.randn(x_true.shape, generator=generator, dtype=x_true.dtype)
        x = x_true + eps * x_true.norm() * noise / noise.norm()
        right = []
        for _ in range(args.rounds + 1):
            found = pool.positions(operator.add_bias(operator.forward(x)))
            right.append(int((relevant & (found == positions)).sum()))
            if len(right) > args.rounds:
                break
            x, report = solve_layer(pooled_system(block, found, inversion, pooled_gradient))
        error = float((x - x_true).norm() / x_true.norm())
        print(
            f"eps {eps:.0e}: maxima right {right[0]} at the start, {right[-1]} after "
            f"{args.rounds} solves (min {min(right)}, max {max(right)}); relative error "
            f"{error:.1e}, residual {report.residual:.1e}",
            flush=True,
        )


if __name__ == "__main__":
    main()
