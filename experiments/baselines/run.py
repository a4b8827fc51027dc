"""linear, hybrid, ig and dlg on the same updates of the same embedded images.

Two studies, both written to ``--out`` (default: this folder):

* ``family``: for each network of ``--models`` and batch size of ``--batch-sizes``, ``--updates``
  FedSGD updates (the batch-mean gradient of a batch drawn from the embedded training set, the
  same images for every network and attack), attacked by every attack of ``--attacks``.
* ``flower``: Flower's quickstart network (``flower_cnn``) at batch 1 under FedSGD, and at batch
  32 under FedAvg (``--local-steps`` SGD steps of learning rate ``--local-lr`` on the batch, the
  server's gradient estimate ``(w_before - w_after) / (lr * steps)``).

Every attack is run on every update; an attack that refuses one (``FlLeakError``: a layer it cannot
express, a batch size it does not support) is recorded as ``unsupported`` with its message. Scores:
reconstructions clamped to [0, 1], matched to the originals (Hungarian matching), PSNR (peak 1) and
SSIM; label accuracy of the matched pairs; seconds of the attack call. Outputs: ``results.csv``
(one row per attack and update), ``results.md`` (means per network, batch size and attack),
``psnr.png`` and image grids under ``grids/``.

    python experiments/baselines/run.py [--jobs 2] [--ig-iterations 4800] [--dlg-iterations 100]
"""

from __future__ import annotations

import argparse
import csv
import math
import multiprocessing
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor, nn

import fl_leak
from fl_leak.data import load_dataset
from fl_leak.errors import FlLeakError
from fl_leak.metrics import score_batch
from fl_leak.report import save_image_grid

HERE = Path(__file__).resolve().parent
ATTACKS = ("linear", "hybrid", "ig", "dlg")


@dataclass(frozen=True)
class Case:
    """One update to attack: network, batch size, update number and local SGD steps."""

    study: str
    model: str
    batch_size: int
    update: int
    local_steps: int = 1


@dataclass
class Row:
    """One attack on one update."""

    study: str
    model: str
    batch_size: int
    local_steps: int
    update: int
    attack: str
    status: str
    psnr: float = math.nan
    ssim: float = math.nan
    label_accuracy: float = math.nan
    seconds: float = math.nan
    notes: str = ""


def batch_indices(batch_size: int, update: int, pool: int) -> Tensor:
    """The embedded training images of an update: the same for every network and attack."""
    generator = torch.Generator().manual_seed(1000 * batch_size + update)
    return torch.randperm(pool, generator=generator)[:batch_size]


def client_update(model: nn.Module, x: Tensor, y: Tensor, steps: int, lr: float) -> list[Tensor]:
    """The server's gradient estimate: exact for one step, ``(w0 - wK) / (lr K)`` for more."""
    if steps == 1:
        loss = F.cross_entropy(model(x), y)
        return [g.detach() for g in torch.autograd.grad(loss, list(model.parameters()))]
    local = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
    start = [p.detach().clone() for p in local]
    names = [name for name, _ in model.named_parameters()]
    for _ in range(steps):
        outputs = torch.func.functional_call(model, dict(zip(names, local, strict=True)), (x,))
        grads = torch.autograd.grad(F.cross_entropy(outputs, y), local)
        with torch.no_grad():
            for weight, grad in zip(local, grads, strict=True):
                weight -= lr * grad
    return [(w0 - wk.detach()) / (lr * steps) for w0, wk in zip(start, local, strict=True)]


def attack_options(attack: str, args: argparse.Namespace) -> dict[str, Any]:
    """The options each attack runs with (defaults apart from the iteration budgets)."""
    if attack == "ig":
        return {"iterations": args.ig_iterations, "patience": 100, "tolerance": 1e-3}
    if attack == "dlg":
        return {"iterations": args.dlg_iterations, "patience": 10}
    return {}


def run_case(case: Case, args: argparse.Namespace) -> tuple[list[Row], dict[str, Tensor], Tensor]:
    """Attack one update with every attack; also the reconstructions and originals for grids."""
    torch.set_num_threads(1)
    data = load_dataset("embedded")
    model = fl_leak.build_model(case.model, num_classes=data.info.num_classes, seed=0)
    indices = batch_indices(case.batch_size, case.update, len(data))
    x = torch.stack([data[int(i)][0] for i in indices])
    y = torch.tensor([data[int(i)][1] for i in indices])
    gradients = client_update(model, x, y, case.local_steps, args.local_lr)
    rows, reconstructions = [], {}
    for attack in args.attacks.split(","):
        row = Row(
            case.study, case.model, case.batch_size, case.local_steps, case.update, attack, ""
        )
        try:
            rec = fl_leak.reconstruct(
                model,
                gradients,
                batch_size=case.batch_size,
                attack=attack,
                **attack_options(attack, args),
            )
        except FlLeakError as error:
            row.status, row.notes = "unsupported", str(error)
            rows.append(row)
            continue
        except Exception as error:  # recorded, not dropped: the table shows what failed
            row.status, row.notes = "failed", f"{type(error).__name__}: {error}"
            rows.append(row)
            continue
        clamped = rec.inputs.double().clamp(0, 1)
        scores = score_batch(x, clamped)
        order = torch.from_numpy(scores.permutation)
        matched_labels = rec.labels[order]
        row.status = "ok"
        row.psnr, row.ssim = scores.mean_psnr, scores.mean_ssim
        row.label_accuracy = float((matched_labels == y).double().mean())
        row.seconds = rec.seconds
        row.notes = "; ".join(rec.notes)
        rows.append(row)
        reconstructions[attack] = clamped[order]
    return rows, reconstructions, x


def _run(
    task: tuple[Case, argparse.Namespace],
) -> tuple[Case, list[Row], dict[str, Tensor], Tensor]:
    case, args = task
    start = time.perf_counter()
    rows, reconstructions, originals = run_case(case, args)
    print(f"{case} done in {time.perf_counter() - start:.0f} s", flush=True)
    return case, rows, reconstructions, originals


def cases(args: argparse.Namespace) -> list[Case]:
    """The family study's updates, then the Flower study's two."""
    family = [
        Case("family", name, batch_size, update)
        for name in args.models.split(",")
        for batch_size in (int(b) for b in args.batch_sizes.split(","))
        for update in range(args.updates)
    ]
    flower = [
        Case("flower", "flower_cnn", 1, 0, 1),
        Case("flower", "flower_cnn", 32, 0, args.local_steps),
    ]
    return family + flower


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def summary(rows: list[Row]) -> list[dict[str, Any]]:
    """Means per study, network, batch size, local steps and attack."""
    groups: dict[tuple, list[Row]] = {}
    for row in rows:
        key = (row.study, row.model, row.batch_size, row.local_steps, row.attack)
        groups.setdefault(key, []).append(row)
    table = []
    for (study, model, batch_size, steps, attack), members in groups.items():
        ok = [r for r in members if r.status == "ok"]
        refused = [r for r in members if r.status != "ok"]
        table.append(
            {
                "study": study,
                "model": model,
                "batch_size": batch_size,
                "local_steps": steps,
                "attack": attack,
                "updates": f"{len(ok)}/{len(members)}",
                "psnr": _mean([r.psnr for r in ok]),
                "ssim": _mean([r.ssim for r in ok]),
                "label_accuracy": _mean([r.label_accuracy for r in ok]),
                "seconds": _mean([r.seconds for r in ok]),
                "status": "ok" if not refused else f"{refused[0].status}: {refused[0].notes}",
            }
        )
    return table


def markdown(table: list[dict[str, Any]]) -> str:
    """The summary as a Markdown table (messages cut at the first sentence)."""
    lines = [
        "| study | model | B | steps | attack | updates | PSNR dB | SSIM | label acc | s/update |"
        " status |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        status = r["status"].split(". ")[0].split(": supported layers")[0]
        lines.append(
            f"| {r['study']} | {r['model']} | {r['batch_size']} | {r['local_steps']} | "
            f"{r['attack']} | {r['updates']} | {r['psnr']:.1f} | {r['ssim']:.3f} | "
            f"{r['label_accuracy']:.2f} | {r['seconds']:.1f} | {status} |"
        )
    return "\n".join(lines).replace("| nan ", "| - ") + "\n"


def psnr_figure(table: list[dict[str, Any]], path: Path, cap: float = 60.0) -> None:
    """Grouped bars: mean PSNR per (network, batch size) and attack, cut at ``cap`` dB."""
    groups = list(dict.fromkeys((r["model"], r["batch_size"], r["local_steps"]) for r in table))
    attacks = [a for a in ATTACKS if any(r["attack"] == a for r in table)]
    value = {(r["model"], r["batch_size"], r["local_steps"], r["attack"]): r for r in table}
    figure = Figure(figsize=(max(6.0, 1.1 * len(groups)), 3.6), dpi=110)
    ax = figure.subplots()
    width = 0.8 / len(attacks)
    for k, attack in enumerate(attacks):
        xs = np.arange(len(groups)) + (k - (len(attacks) - 1) / 2) * width
        heights = [
            value[(*g, attack)]["psnr"] if (*g, attack) in value else math.nan for g in groups
        ]
        ax.bar(xs, np.minimum(np.nan_to_num(heights), cap), width, label=attack)
        for x, height in zip(xs, heights, strict=True):
            label = "n/a" if math.isnan(height) else f"{height:.0f}" if height > cap else ""
            ax.text(x, min(height, cap) if label != "n/a" else 1, label, rotation=90,
                    ha="center", va="bottom", fontsize=6)  # fmt: skip
    ax.set_ylim(0, cap * 1.15)
    ax.set_xticks(np.arange(len(groups)))
    ax.set_xticklabels(
        [f"{m}\nB={b}" + (f", {s} steps" if s > 1 else "") for m, b, s in groups], fontsize=7
    )
    ax.set_ylabel(f"mean PSNR (dB, cut at {cap:.0f})")
    ax.legend(fontsize=7, ncol=len(attacks), loc="upper right")
    figure.tight_layout()
    figure.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="cnn2_c1,cnn3_c1,lenet,resnet_small")
    parser.add_argument("--batch-sizes", default="1,4")
    parser.add_argument("--updates", type=int, default=2, help="updates per network and batch")
    parser.add_argument("--attacks", default=",".join(ATTACKS))
    parser.add_argument("--ig-iterations", type=int, default=4800)
    parser.add_argument("--dlg-iterations", type=int, default=100)
    parser.add_argument("--local-steps", type=int, default=5, help="FedAvg steps (flower study)")
    parser.add_argument("--local-lr", type=float, default=0.05)
    parser.add_argument("--jobs", type=int, default=1, help="updates attacked in parallel")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    start = time.perf_counter()
    tasks = [(case, args) for case in cases(args)]
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        done = pool.map(_run, tasks, chunksize=1)
    rows = [row for _, case_rows, _, _ in done for row in case_rows]
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(row) for row in rows)
    table = summary(rows)
    (args.out / "results.md").write_text(markdown(table))
    psnr_figure(table, args.out / "psnr.png")
    for case, _, reconstructions, originals in done:
        if case.update != 0 or (case.study == "family" and case.batch_size == 1):
            continue
        for attack, images in reconstructions.items():
            name = f"{case.model}_b{case.batch_size}_s{case.local_steps}_{attack}.png"
            save_image_grid(originals, images, args.out / "grids" / name, match=False)
    print(markdown(table))
    print(f"total {time.perf_counter() - start:.0f} s with {args.jobs} job(s)")


if __name__ == "__main__":
    main()
