"""The realistic study's table and figure, from the ``results.csv`` of one or more reports.

Prints a markdown table (one row per attack and setting: local epochs, steps, learning rate, the
attacked client, updates, samples scored, PSNR mean and maximum over the updates, SSIM, both scores
of a constant mid-grey guess against the same samples, label accuracy, the gradient estimate's
relative error, seconds) and draws ``psnr_vs_steps_and_lr.png``: the PSNR of each attack against
the client's local steps, one line per learning rate, with the mid-grey guess for reference.

Several ``results.csv`` combine setting by setting: a later file's settings (local epochs and
learning rate) replace every row of those settings in the earlier ones, so that within a setting
every attack is scored on the same run's update.

    python experiments/realistic/figure.py [--results RESULTS.csv ...]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import torch

from fl_leak.config import compose
from fl_leak.fl.local_data import load_split, round_plan
from fl_leak.fl.task import samples
from fl_leak.metrics.image import psnr, ssim

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

HERE = Path(__file__).resolve().parent
ATTACKS = ("linear", "hybrid", "ig", "dlg", "fedavg_hybrid", "fedavg_unroll")
SETTING = ["attack", "local_epochs", "steps", "lr"]
FL_SETTING = ["local_epochs", "lr"]


def grey_scores(attack: str, local_epochs: int, lr: float, client: int) -> tuple[float, float]:
    """Mean PSNR and SSIM of a constant 0.5 image against the samples ``attack`` is scored on in
    that setting: the first step's batch for a batch attack, every trained sample for a FedAvg
    one."""
    settings = compose(["experiment=realistic", f"fl.local_epochs={local_epochs}", f"fl.lr={lr}"])
    dataset = load_split(settings.data, train=True)
    plan = round_plan(settings, client, server_round=1)
    indices = plan.trained if attack.startswith("fedavg") else plan.target
    images, _ = samples(dataset, indices, torch.float64)
    grey = torch.full_like(images, 0.5)
    return float(psnr(images, grey).mean()), float(ssim(images, grey).mean())


def combine(results: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The records of several reports, setting by setting: the rows of each FL setting (local
    epochs and learning rate) come from the last report that holds it."""
    combined = results[0]
    for later in results[1:]:
        replaced = pd.MultiIndex.from_frame(combined[FL_SETTING]).isin(
            pd.MultiIndex.from_frame(later[FL_SETTING])
        )
        combined = pd.concat([combined[~replaced], later], ignore_index=True)
    return combined


def summary(results: pd.DataFrame) -> pd.DataFrame:
    """One row per attack and setting: counts and scores of its successful records."""
    ok = results[results["status"] == "ok"]
    table = ok.groupby(SETTING).agg(
        updates=("psnr", "size"),
        samples=("samples", "sum"),
        psnr_mean=("psnr", "mean"),
        psnr_max=("psnr", "max"),
        ssim=("ssim", "mean"),
        label_accuracy=("label_accuracy", "mean"),
        gradient_error=("gradient_relative_error", "mean"),
        seconds=("seconds", "mean"),
    )
    table = table.reset_index()
    table["client"] = ok.groupby(SETTING)["client"].first().to_numpy()
    grey = [
        grey_scores(row.attack, row.local_epochs, row.lr, row.client) for row in table.itertuples()
    ]
    table["grey"], table["grey_ssim"] = zip(*grey, strict=True)
    table["order"] = table["attack"].map(ATTACKS.index)
    return table.sort_values(["order", "local_epochs", "lr"]).drop(columns="order")


def markdown(table: pd.DataFrame) -> str:
    """The summary as a markdown table."""
    lines = [
        "| attack | epochs | steps | lr | client | updates | samples | PSNR dB mean | max "
        "| mid-grey | SSIM | mid-grey | label acc | gradient error | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table.itertuples():
        lines.append(
            f"| {row.attack} | {row.local_epochs} | {row.steps} | {row.lr:g} | {row.client} "
            f"| {row.updates} | {row.samples} | {row.psnr_mean:.1f} | {row.psnr_max:.1f} "
            f"| {row.grey:.1f} | {row.ssim:.3f} | {row.grey_ssim:.3f} "
            f"| {row.label_accuracy:.2f} | {row.gradient_error:.2f} | {row.seconds:.0f} |"
        )
    return "\n".join(lines)


def figure(table: pd.DataFrame, path: Path) -> None:
    """PSNR against local steps, a panel per attack, a line per learning rate."""
    fig, axes = plt.subplots(2, 3, figsize=(10, 5.6), sharex=True, sharey=True)
    for ax, attack in zip(axes.flat, ATTACKS, strict=True):
        rows = table[table["attack"] == attack]
        for lr, group in rows.groupby("lr"):
            ax.plot(group["steps"], group["psnr_mean"], marker="o", label=f"lr {lr:g}")
        ax.scatter(rows["steps"], rows["grey"], marker="_", s=200, color="grey", label="mid-grey")
        kind = "FedAvg attack: every sample" if attack.startswith("fedavg") else "first batch"
        ax.set_title(f"{attack} ({kind})", fontsize=9)
        ax.grid(alpha=0.3)
        if len(rows):
            ax.legend(fontsize=8)
    for ax in axes[1]:
        ax.set_xlabel("local SGD steps")
        ax.set_xticks([2, 6])
        ax.set_xlim(1.4, 6.6)
    for ax in axes[:, 0]:
        ax.set_ylabel("PSNR (dB)")
    fig.suptitle(
        "flower_cnn, batch 32, 10 clients, 38 samples a client: PSNR against local steps "
        "(1 and 3 epochs) and learning rate",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--results",
        type=Path,
        nargs="+",
        default=[HERE / "report" / "results.csv"],
        help="reports' results.csv; a later one's settings replace the earlier ones'",
    )
    parser.add_argument("--out", type=Path, default=HERE / "psnr_vs_steps_and_lr.png")
    args = parser.parse_args()
    table = summary(combine([pd.read_csv(path) for path in args.results]))
    print(markdown(table))
    figure(table, args.out)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
