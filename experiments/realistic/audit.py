"""The audit of ``flower_cnn`` at the data of the realistic study: what the attacked client's update
can determine, layer by layer.

The study's settings (``experiment=realistic``): the global model of round 1 (seed 0), the client's
partition of the embedded training images and its round-1 plan (the batches its local steps take).
The audit probes at the data itself (``fl_leak.audit(..., inputs=, labels=)``): at batch 1 (the
first sample of the first step's batch), at the study's batch (the first step's batch, what the
batch attacks reconstruct) and at all the samples the client trained on (what the FedAvg attacks
reconstruct). Writes ``audit.csv`` (one row per batch and layer) and prints each table.

    python experiments/realistic/audit.py [--client 5] [--out experiments/realistic/audit.csv]
"""

from __future__ import annotations

import argparse
import csv
import time
from dataclasses import asdict
from pathlib import Path

import torch

import fl_leak
from fl_leak.config import compose
from fl_leak.fl.local_data import load_split, round_plan
from fl_leak.fl.task import initial_model, samples

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--client", type=int, default=5, help="the partition audited")
    parser.add_argument("--max-dense", type=int, default=6000)
    parser.add_argument("--out", type=Path, default=HERE / "audit.csv")
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = compose(["experiment=realistic", "fl.local_epochs=1"])
    dataset = load_split(settings.data, train=True)
    model = initial_model(settings, dataset.info)
    plan = round_plan(settings, args.client, server_round=1)
    probes = {
        "batch 1": plan.target[:1],
        f"batch {len(plan.target)} (first step)": plan.target,
        f"all {len(plan.trained)} trained": plan.trained,
    }
    rows = []
    for name, indices in probes.items():
        inputs, labels = samples(dataset, indices, torch.float32)
        start = time.perf_counter()
        report = fl_leak.audit(
            model.double(),
            tuple(dataset.info.input_shape),
            len(indices),
            inputs=inputs.double(),
            labels=labels,
            max_dense=args.max_dense,
        )
        print(f"\n== {name}: {time.perf_counter() - start:.1f} s\n{report.table()}", flush=True)
        for layer in report.layers:
            fields = {key: value for key, value in asdict(layer).items() if key != "path"}
            row = {"probe": name, "batch_size": len(indices), "audit_index": report.index}
            row.update({"layer" if key == "index" else key: value for key, value in fields.items()})
            rows.append(row)
    with args.out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
