"""PSNR of the FedAvg attacks against the first-order baseline, over learning rate and local steps.

A client takes ``S`` local SGD steps of one image each (``S`` different embedded images, the first
of classes 0..S-1, so that labels are distinct), in float64, from the model's seeded initial
weights; the server sees ``(w_sent - w_returned) / (lr * S)``. Side by side, for each setting:

* ``first_order``: the ``linear`` attack taking that update for the gradient of one batch of all
  ``S`` images at the sent weights (the approximation of DESIGN.md, "Multi-step FedAvg");
* ``fedavg_hybrid``: the same solve corrected along the simulated trajectory;
* ``fedavg_unroll``: optimisation through the unrolled local training (from the first-order
  estimate).

Prints one line per (model, lr, steps, attack): mean and minimum PSNR over the images, label
accuracy, the update-reproduction residual and seconds. Run from the repository root::

    python benchmarks/fedavg_curve.py --quick          # cnn2_c1, lr 1e-2, 2 steps
    python benchmarks/fedavg_curve.py                  # cnn2_c1, lr 1e-4..0.1, steps 1,2,4,10
    python benchmarks/fedavg_curve.py --models cnn2_c1 cnn2_c5 --lrs 0.01 --steps 4
    python benchmarks/fedavg_curve.py --models cnn2_c5 --lrs 0.01 --steps 4 --lr-stages 10 \\
        --anderson-memory 0
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

import fl_leak
from fl_leak.data import load_dataset
from fl_leak.fl.task import sgd_steps
from fl_leak.metrics import score_batch
from fl_leak.models import build_model

SHAPE = (3, 32, 32)


def client_images(steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first embedded image of each class 0..steps-1, in [0, 1], float64."""
    data = load_dataset("embedded")
    index = torch.stack([torch.nonzero(data.labels == c)[0, 0] for c in range(steps)])
    return data.images[index].double() / 255.0, data.labels[index]


def observed_update(model: torch.nn.Module, images, labels, lr: float) -> list[torch.Tensor]:
    """The client's update of one step per image, in gradient units (the server's estimate)."""
    client = copy.deepcopy(model)
    steps = len(labels)
    sgd_steps(client, [(images[k : k + 1], labels[k : k + 1]) for k in range(steps)], lr)
    return [
        (sent.detach() - returned.detach()) / (lr * steps)
        for sent, returned in zip(model.parameters(), client.parameters(), strict=True)
    ]


def run(model_name: str, lr: float, steps: int, attacks: dict[str, dict]) -> None:
    model = build_model(model_name, SHAPE, 10, seed=0).double()
    images, labels = client_images(steps)
    gradients = observed_update(model, images, labels, lr)
    schedule = {"local_lr": lr, "local_steps": steps, "local_batch_size": 1}
    for name, options in attacks.items():
        attack = "linear" if name == "first_order" else name
        extra = {} if attack == "linear" else {**schedule, **options}
        start = time.perf_counter()
        rec = fl_leak.reconstruct(model, gradients, SHAPE, steps, attack=attack, **extra)
        seconds = time.perf_counter() - start
        scores = score_batch(images, rec.inputs.double().clamp(0, 1))
        psnr = torch.as_tensor(scores.psnr)
        accuracy = float((rec.labels.sort().values == labels.sort().values).double().mean())
        residual = rec.trajectory.residuals[-1] if rec.trajectory else float("nan")
        iterations = rec.trajectory.iterations if rec.trajectory else 0
        print(
            f"{model_name:8s} lr={lr:<7g} steps={steps:<3d} {name:14s} "
            f"psnr mean {float(psnr.mean()):7.1f} min {float(psnr.min()):7.1f} dB  "
            f"labels {accuracy:.2f}  residual {residual:.2e}  iterations {iterations:4d}  "
            f"{seconds:7.1f} s",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="cnn2_c1, lr 1e-2, 2 steps")
    parser.add_argument("--models", nargs="+", default=["cnn2_c1"])
    parser.add_argument("--lrs", nargs="+", type=float, default=[1e-4, 1e-3, 1e-2, 0.1])
    parser.add_argument("--steps", nargs="+", type=int, default=[1, 2, 4, 10])
    parser.add_argument(
        "--attacks", nargs="+", default=["first_order", "fedavg_hybrid", "fedavg_unroll"]
    )
    parser.add_argument("--trajectory-iterations", type=int, default=30)
    parser.add_argument("--lr-stages", type=int, default=1, help="fedavg_hybrid's lr_stages")
    parser.add_argument("--stage-iterations", type=int, default=3)
    parser.add_argument("--anderson-memory", type=int, default=5)
    parser.add_argument("--unroll-iterations", type=int, default=500)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.quick:
        args.models, args.lrs, args.steps = ["cnn2_c1"], [1e-2], [2]
    options = {
        "first_order": {},
        "fedavg_hybrid": {
            "trajectory_iterations": args.trajectory_iterations,
            "lr_stages": args.lr_stages,
            "stage_iterations": args.stage_iterations,
            "anderson_memory": args.anderson_memory,
        },
        "fedavg_unroll": {"iterations": args.unroll_iterations, "log_every": None},
    }
    attacks = {name: options[name] for name in args.attacks}
    for model_name in args.models:
        for lr in args.lrs:
            for steps in args.steps:
                run(model_name, lr, steps, attacks)


if __name__ == "__main__":
    main()
