"""The linear attack on noisy updates: the noise-aware solve with and without shrinkage to grey.

For each setting (network, batch) and each perturbation of the update, the same noisy gradients
are attacked side by side in one run: by the noise-aware walk without shrinkage (``shrink=False``:
convolution layers solved by Tikhonov regularisation, other layers stopped by the discrepancy
principle, the flat least-squares input where it fits better), by the default (the same walk,
then shrunk towards grey band by band with weights from two more walks), and with ``--plain``
also by the plain least-squares solve (``noise_aware=False``; where LSMR solves it, slow: it runs
to its iteration limit). The table gives the time and the PSNR of each (after
Hungarian matching for a batch, labels recovered by the attack, reconstructions clamped to [0, 1];
a batch of ``B`` is the first embedded image of each of the classes ``0 .. B-1``), the PSNR of
the flat grey image (0.5 everywhere, the image the shrinkage falls back to) and of each
original's own mean colour (an oracle: the attack does not know it), and the cost of the default
on the noisy update over the attack on the clean one (``clean s``, the faster of two runs per
setting).
Two closing lines list the settings where the default ends more than 0.05 dB below grey and
those where it costs more than 3 times the clean attack.

Perturbations: relative Gaussian noise (std ``sigma`` times each gradient tensor's RMS; float64
gradients), and local DP as the ``clip_noise`` defense applies it with ``where=client`` (a float32
FedSGD update of learning rate 0.1 clipped to L2 norm 0.5, Gaussian noise of std
``noise_multiplier * 0.5`` per entry; the server's gradient is ``(sent - returned) / lr``).

    python benchmarks/bench_noise.py [--settings lenet:1,cnn2_c5:1,cnn2_c5:4] [--dp 0.001,0.1]
        [--levels 0.001,0.01,0.1,1] [--plain]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import fl_leak
from fl_leak.data import load_dataset
from fl_leak.defenses.privacy import ClipNoise
from fl_leak.metrics import psnr, score_batch

SETTINGS = "lenet:1,lenet:4,cnn2_c5:1,cnn2_c5:4,cnn2_c1:1,cnn2_c1:4"
LEVELS = (1e-3, 1e-2, 1e-1, 1.0)
DP = (0.001, 0.01, 0.1)
LR, CLIP = 0.1, 0.5


def relative_noise(gradients: list[Tensor], level: float, seed: int) -> list[Tensor]:
    """Each tensor plus Gaussian noise of std ``level`` times the tensor's RMS."""
    generator = torch.Generator().manual_seed(seed)
    return [
        g
        + level * g.pow(2).mean().sqrt() * torch.randn(g.shape, generator=generator, dtype=g.dtype)
        for g in gradients
    ]


def local_dp(
    model: nn.Module, gradients: list[Tensor], multiplier: float, seed: int
) -> list[Tensor]:
    """The server's gradient from a FedSGD update protected by local DP (``clip_noise``)."""
    names = [name for name, _ in model.named_parameters()]
    sent = {name: p.detach().float() for name, p in model.named_parameters()}
    trained = {name: sent[name] - LR * g.float() for name, g in zip(names, gradients, strict=True)}
    defense = ClipNoise(clipping_norm=CLIP, noise_multiplier=multiplier, where="client")
    protected = defense.protect_update(sent, trained, torch.Generator().manual_seed(seed))
    return [(sent[name].double() - protected[name].double()) / LR for name in names]


def first_of_classes(labels: Tensor, count: int) -> list[int]:
    """Indices of the first embedded image of each of the first ``count`` classes."""
    return [int((labels == label).nonzero()[0]) for label in range(count)]


def attack(
    model: nn.Module, gradients: list[Tensor], images: Tensor, **options: object
) -> tuple[float, float]:
    """Seconds and mean PSNR of the linear attack on ``gradients`` with ``options``."""
    start = time.perf_counter()
    result = fl_leak.reconstruct(
        model, gradients, batch_size=images.shape[0], attack="linear", **options
    )
    seconds = time.perf_counter() - start
    scores = score_batch(images, result.inputs.clamp(0, 1).to(images.dtype))
    return seconds, float(scores.psnr.clamp(max=200).mean())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--settings", default=SETTINGS, help="network:batch,...")
    parser.add_argument("--levels", default=",".join(f"{v:g}" for v in LEVELS))
    parser.add_argument("--dp", default=",".join(f"{v:g}" for v in DP), help="noise multipliers")
    parser.add_argument("--plain", action="store_true", help="also the plain least squares")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("embedded")
    methods = {"current": {"shrink": False}, "default": {}}
    if args.plain:
        methods = {"plain": {"noise_aware": False}, **methods}
    print(
        f"{'network':<8} {'B':>2} {'perturbation':<16} {'clean s':>7} "
        + " ".join(f"{m + ' s':>9} {m + ' dB':>10}" for m in methods)
        + f" {'grey dB':>7} {'colour dB':>9} {'cost x':>6}"
    )
    rows: list[tuple[str, float, float]] = []  # setting, default dB over grey, cost
    for setting in args.settings.split(","):
        name, batch = setting.split(":")
        chosen = first_of_classes(data.labels, int(batch))
        images, labels = data.images[chosen].double() / 255, data.labels[chosen]
        grey = float(psnr(images, torch.full_like(images, 0.5)).mean())
        colour = float(psnr(images, images.mean((2, 3), keepdim=True).expand_as(images)).mean())
        model = fl_leak.build_model(name, seed=0, num_classes=12).double()
        loss = F.cross_entropy(model(images), labels)
        exact = [g.detach() for g in torch.autograd.grad(loss, list(model.parameters()))]
        # the faster of two runs: the first attack of a process also pays one-time set-up
        clean = min(attack(model, exact, images)[0] for _ in range(2))
        cases = [
            (f"sigma {float(v):g}", relative_noise(exact, float(v), 0))
            for v in args.levels.split(",")
        ]
        if args.dp:
            cases += [
                (f"local DP {float(v):g}", local_dp(model, exact, float(v), 0))
                for v in args.dp.split(",")
            ]
        for label, gradients in cases:
            runs = {m: attack(model, gradients, images, **o) for m, o in methods.items()}
            cost = runs["default"][0] / clean
            print(
                f"{name:<8} {batch:>2} {label:<16} {clean:>7.2f} "
                + " ".join(f"{t:>9.2f} {db:>10.1f}" for t, db in runs.values())
                + f" {grey:>7.1f} {colour:>9.1f} {cost:>6.1f}",
                flush=True,
            )
            rows.append((f"{name}:{batch} {label}", runs["default"][1] - grey, cost))
    below = [(setting, margin) for setting, margin, _ in rows if margin < -0.05]
    dear = [(setting, cost) for setting, _, cost in rows if cost > 3]
    print(f"default below grey (by more than 0.05 dB): {len(below)} of {len(rows)} {below}")
    print(f"default above 3x the clean attack: {len(dear)} of {len(rows)} {dear}")


if __name__ == "__main__":
    main()
