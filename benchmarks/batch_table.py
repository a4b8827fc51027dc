"""Audit against measured recovery for batches, labels recovered (not given).

For each network and batch size, one seeded batch of distinct embedded images (the same for every
network at that batch size): the audit at that
batch (``audit(..., inputs=images, labels=labels)``: a ReLU layer's rank depends on the data's
active set, which a random probe does not represent) with its total exact-or-bound deficiency,
its numerical deficiency (singular values below ``rtol`` times the largest, the last layer
included) and its verdict ``full``; then the linear attack on the float32 model's update: PSNR
after Hungarian matching (minimum and mean over the batch), whether the label multiset was
recovered exactly, and seconds. Where the audit does not say full rank, hybrid's PSNR is added for
the models named by ``--hybrid``. Rows are printed, and appended to ``--csv``, as they are made.

    python benchmarks/batch_table.py [--models cnn2_c1,lenet] [--batch-sizes 1,2,4,8]
    python benchmarks/batch_table.py --models family --hybrid cnn2_relu,lenet_relu --csv t.csv
    python benchmarks/batch_table.py --models cnn2_c1,cnn3_c3 --batch-sizes 2,4,8 --distinct-labels
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import fl_leak
from fl_leak.data import load_dataset
from fl_leak.metrics import score_batch
from fl_leak.models.family import FAMILY

MODELS = "cnn2_c1,cnn2_c11,cnn2_c5,cnn3_c3,lenet,lenet2,cnn2_relu,lenet_relu"
COLUMNS = (
    ("model", "<11", "s"),
    ("B", ">2", "d"),
    ("deficiency", ">10", "d"),
    ("numerical", ">9", "d"),
    ("full", ">5", "s"),
    ("audit_s", ">7", ".1f"),
    ("lin_min_db", ">10", ".1f"),
    ("lin_mean_db", ">11", ".1f"),
    ("labels", ">6", "s"),
    ("lin_s", ">6", ".1f"),
    ("hyb_min_db", ">10", ".1f"),
    ("hyb_s", ">6", ".1f"),
)


def _score(model, gradients, images, labels, attack: str) -> tuple[float, float, bool, float]:
    start = time.perf_counter()
    reconstruction = fl_leak.reconstruct(model, gradients, batch_size=len(labels), attack=attack)
    seconds = time.perf_counter() - start
    scores = score_batch(images, reconstruction.inputs.float().clamp(0, 1))
    labels_ok = torch.equal(torch.sort(reconstruction.labels).values, torch.sort(labels).values)
    return float(scores.psnr.min()), float(scores.psnr.clamp(max=200).mean()), labels_ok, seconds


def _batch(labels: torch.Tensor, batch_size: int, seed: int, distinct: bool) -> torch.Tensor:
    """Indices of one seeded batch, the same for every model at a batch size: distinct images,
    or with ``distinct`` one image of each of ``batch_size`` distinct classes."""
    generator = torch.Generator().manual_seed(1000 * seed + batch_size)
    if not distinct:
        return torch.randperm(len(labels), generator=generator)[:batch_size]
    classes = labels.unique()
    if batch_size > len(classes):
        raise SystemExit(f"--distinct-labels: batch size {batch_size} > {len(classes)} classes")
    chosen = classes[torch.randperm(len(classes), generator=generator)[:batch_size]]
    members = [torch.nonzero(labels == c).flatten() for c in chosen]
    return torch.stack([m[torch.randint(len(m), (1,), generator=generator)][0] for m in members])


def _line(row: dict) -> str:
    cells = []
    for name, align, kind in COLUMNS:
        value = row.get(name)
        text = "-" if value is None else format(value, kind if kind != "s" else "")
        cells.append(format(text, align))
    return " ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default=MODELS, help="comma-separated, or 'family'")
    parser.add_argument("--batch-sizes", default="1,2,4,8")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rtol", type=float, default=1e-4, help="the audit's rtol")
    parser.add_argument(
        "--hybrid", default="all", help="models to run hybrid on where not full rank, or 'all'"
    )
    parser.add_argument("--csv", type=Path, default=None, help="append every row to this CSV")
    parser.add_argument(
        "--distinct-labels", action="store_true", help="one image of each of B distinct classes"
    )
    args = parser.parse_args()
    names = list(FAMILY) if args.models == "family" else args.models.split(",")
    hybrid = set(names) if args.hybrid == "all" else set(args.hybrid.split(","))
    data = load_dataset("embedded")
    print(" ".join(format(name, align) for name, align, _ in COLUMNS), flush=True)
    for name in names:
        model = fl_leak.build_model(name, seed=0, num_classes=data.info.num_classes)
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            index = _batch(data.labels, batch_size, args.seed, args.distinct_labels)
            images, labels = data.images[index].float() / 255, data.labels[index]
            start = time.perf_counter()
            report = fl_leak.audit(
                model, batch_size=batch_size, inputs=images, labels=labels, rtol=args.rtol
            )
            row = {
                "model": name,
                "B": batch_size,
                "deficiency": sum(layer.deficiency for layer in report.layers),
                "numerical": sum(layer.numerical_deficiency or 0 for layer in report.layers),
                "full": str(report.full_rank),
                "audit_s": time.perf_counter() - start,
            }
            gradients = torch.autograd.grad(
                F.cross_entropy(model(images), labels), list(model.parameters())
            )
            lin_min, lin_mean, labels_ok, lin_s = _score(model, gradients, images, labels, "linear")
            row |= {
                "lin_min_db": lin_min,
                "lin_mean_db": lin_mean,
                "labels": str(labels_ok),
                "lin_s": lin_s,
            }
            if not report.full_rank and name in hybrid:
                hyb_min, _, _, hyb_s = _score(model, gradients, images, labels, "hybrid")
                row |= {"hyb_min_db": hyb_min, "hyb_s": hyb_s}
            print(_line(row), flush=True)
            if args.csv is not None:
                _append(args.csv, row)


def _append(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[name for name, _, _ in COLUMNS])
        if new:
            writer.writeheader()
        writer.writerow(row)


if __name__ == "__main__":
    main()
