"""CPU against GPU on the largest systems, side by side in one run.

Cases (each run on ``cpu`` and then on ``cuda``, same float64 inputs and options):

* ``linear 224``: the linear attack on a 3x224x224 first layer (conv 3->12 k4 s2 p2, tanh; the
  first layer of cnn6d), batch 1;
* ``linear B=16``: the linear attack on cnn2_c5 at batch 16 (embedded images, labels given);
* ``hybrid B=1``: hybrid on cnn3_c1 (rank-deficient), 200 correction iterations;
* ``ig`` and ``dlg``: 200 iterations each on cnn2_c1, batch 1;
* ``audit``: the audit of cnn3_c3 at batch 1 (its dense linear algebra on the device: Gram
  matrices of 3,072 and 5,400 unknowns factorised; the
  difference column compares the layers' deficiencies).

Columns: seconds on each device, their ratio, and the largest difference between the two
reconstructions relative to the CPU one's largest entry (the solves stop at the same tolerance, so
this is about the solver's tolerance times the layers' conditioning, not rounding alone). With no
CUDA device the script says so and exits.

    python benchmarks/bench_gpu.py [--solver auto|lsmr|cgls] [--cases linear224,linear16,...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from bench_solver import large_input_problem  # benchmarks/, the script's own folder
from torch import nn

import fl_leak
from fl_leak.data import load_dataset
from fl_leak.metrics.audit import audit


def _gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
    loss = F.cross_entropy(model(images), labels)
    return list(torch.autograd.grad(loss, list(model.parameters())))


def _first_layer_224() -> tuple[nn.Module, list[torch.Tensor], dict]:
    model, image, label = large_input_problem()
    return model, _gradients(model, image, label), {"input_shape": (3, 224, 224)}


def _embedded_batch(name: str, batch: int) -> tuple[nn.Module, list[torch.Tensor], dict]:
    data = load_dataset("embedded")
    model = fl_leak.build_model(name, seed=0, num_classes=data.info.num_classes)
    index = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:batch]
    images, labels = data.images[index].float() / 255, data.labels[index]
    extra = {"batch_size": batch, "labels": labels}
    return model, _gradients(model, images, labels), extra


def _reconstruct(case: Callable, attack: str, **options) -> Callable[[str], torch.Tensor]:
    model, gradients, extra = case()

    def run(device: str) -> torch.Tensor:
        result = fl_leak.reconstruct(
            model, gradients, attack=attack, device=device, **extra, **options
        )
        return result.inputs.detach().cpu().double()

    return run


def _audit(name: str, batch: int) -> Callable[[str], torch.Tensor]:
    model = fl_leak.build_model(name, seed=0)

    def run(device: str) -> torch.Tensor:
        report = audit(model, batch_size=batch, device=device)
        return torch.tensor([float(layer.deficiency) for layer in report.layers])

    return run


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--solver", default="auto", choices=["auto", "lsmr", "cgls"])
    parser.add_argument(
        "--cases", default="linear224,linear16,hybrid,ig,dlg,audit", help="comma-separated"
    )
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA device (torch.cuda.is_available() is False); nothing to compare")
        return
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"{load}\nGPU {torch.cuda.get_device_name(0)}, solver method {args.solver}", flush=True)
    solver = {"method": args.solver}
    cases: dict[str, Callable[[], Callable[[str], torch.Tensor]]] = {
        "linear224": lambda: _reconstruct(_first_layer_224, "linear", **solver),
        "linear16": lambda: _reconstruct(
            lambda: _embedded_batch("cnn2_c5", 16), "linear", **solver
        ),
        "hybrid": lambda: _reconstruct(
            lambda: _embedded_batch("cnn3_c1", 1), "hybrid", iterations=200, **solver
        ),
        "ig": lambda: _reconstruct(lambda: _embedded_batch("cnn2_c1", 1), "ig", iterations=200),
        "dlg": lambda: _reconstruct(lambda: _embedded_batch("cnn2_c1", 1), "dlg", iterations=200),
        "audit": lambda: _audit("cnn3_c3", 1),
    }
    print(f"{'case':<10} {'cpu s':>8} {'cuda s':>8} {'cpu/cuda':>8} {'max diff':>9}", flush=True)
    for name in args.cases.split(","):
        run = cases[name]()
        seconds, results = [], []
        for device in ("cpu", "cuda"):
            start = time.perf_counter()
            results.append(run(device))
            if device == "cuda":
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - start)
        scale = float(results[0].abs().max()) or 1.0
        difference = float((results[0] - results[1]).abs().max()) / scale
        print(
            f"{name:<10} {seconds[0]:>8.2f} {seconds[1]:>8.2f} {seconds[0] / seconds[1]:>8.1f} "
            f"{difference:>9.1e}",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
