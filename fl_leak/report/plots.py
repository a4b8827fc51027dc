"""Plots of a report (matplotlib, no display needed): each drawn when the sweep varies its axis.

* ``psnr_vs_batch_size.png``: PSNR (mean and std over successful records) and the audit index
  against batch size, per architecture and attack;
* ``psnr_vs_audit_index.png``: mean PSNR per architecture against its audit index, per attack,
  with Spearman's rank correlation;
* ``psnr_vs_local_steps.png``: PSNR and the gradient estimate's relative error against local steps;
* ``privacy_utility.png``: per defense and strength, the attacks' mean PSNR and label accuracy
  against the global model's test accuracy (the no-defense point included).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fl_leak.report.collect import model_means, rank_correlations

DPI = 120
PANEL = (5.5, 4.2)  # inches per panel


def _label(key: tuple[object, ...], columns: Sequence[str], varying: set[str]) -> str:
    return " ".join(
        f"{column}={value}" for value, column in zip(key, columns, strict=True) if column in varying
    )


def _lines(
    ax: Axes,
    table: pd.DataFrame,
    x: str,
    y: str,
    series: Sequence[str],
    successful_only: bool = True,
) -> None:
    """``y`` (mean, std as error bars) against ``x``, one line per value of ``series``.

    With ``successful_only``, rows whose ``status`` is not ``ok`` are left out of the means and
    counted in the label.
    """
    varying = {column for column in series if table[column].nunique(dropna=False) > 1}
    for key, group in table.groupby(list(series), sort=True, dropna=False):
        used = group[group["status"] == "ok"] if successful_only else group
        stats = used.astype({y: float}).groupby(x, sort=True)[y].agg(["mean", "std"]).reset_index()
        failed = len(group) - len(used)
        label = _label(key, series, varying) or y
        if failed:
            label += f" ({failed}/{len(group)} failed)"
        ax.errorbar(
            stats[x], stats["mean"], yerr=stats["std"].fillna(0), marker="o", capsize=3, label=label
        )
    ax.set_xlabel(x)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def _figure(panels: int) -> tuple[Figure, list[Axes]]:
    figure = Figure(figsize=(PANEL[0] * panels, PANEL[1]), layout="constrained")
    return figure, list(figure.subplots(1, panels, squeeze=False)[0])


def batch_size_figure(table: pd.DataFrame) -> Figure:
    """PSNR, and the audit index (deficiency weighted toward the input), against batch size."""
    figure, (psnr, audit) = _figure(2)
    _lines(psnr, table, "batch_size", "psnr", ["model", "attack"])
    psnr.set_ylabel("PSNR (dB)")
    _lines(audit, table, "batch_size", "audit_index", ["model"], successful_only=False)
    audit.set_ylabel("audit index (0: every layer uniquely solvable)")
    for ax in (psnr, audit):
        ax.set_xscale("log", base=2)
    return figure


def audit_index_figure(table: pd.DataFrame) -> Figure | None:
    """Mean PSNR per architecture against its audit index, one series per attack (and batch)."""
    means = model_means(table).dropna(subset=["psnr", "audit_index"])
    if means.empty:
        return None
    correlations = rank_correlations(table).set_index(["attack", "batch_size"])
    several_batches = means["batch_size"].nunique() > 1
    figure, (ax,) = _figure(1)
    for (attack, batch_size), group in means.groupby(["attack", "batch_size"], sort=True):
        label = f"{attack}, batch {batch_size}" if several_batches else str(attack)
        if (attack, batch_size) in correlations.index:
            label += f": Spearman rho {correlations.loc[(attack, batch_size), 'rho']:.2f}"
        ax.scatter(group["audit_index"], group["psnr"], label=label)
    highest = means.groupby("model")[["audit_index", "psnr"]].max()  # one name per model
    for model, row in highest.iterrows():
        ax.annotate(
            str(model),
            (row["audit_index"], row["psnr"]),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
            rotation=30,
        )
    ax.set_xlabel("audit index (0: every layer uniquely solvable)")
    ax.set_ylabel("mean PSNR (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return figure


def local_steps_figure(table: pd.DataFrame) -> Figure:
    """PSNR and the gradient estimate's relative error against the clients' local steps."""
    figure, (psnr, error) = _figure(2)
    series = ["model", "attack", "local_data", "lr"]
    _lines(psnr, table, "local_steps", "psnr", series)
    psnr.set_ylabel("PSNR (dB)")
    _lines(error, table, "local_steps", "gradient_relative_error", series)
    error.set_ylabel("relative error of the gradient estimate")
    error.set_yscale("log")
    for ax in (psnr, error):
        ax.set_xscale("log")
    return figure


def _strength_labels(means: pd.DataFrame) -> pd.Series:
    """Per row, the options that vary within its defense (``key=value``), else its name."""
    labels = pd.Series("", index=means.index)
    for defense, group in means.groupby("defense", sort=False):
        options = [
            dict(item.split("=", 1) for item in str(text).split(",") if "=" in item)
            for text in group["defense_options"]
        ]
        keys = set().union(*options)
        varying = sorted(key for key in keys if len({o.get(key) for o in options}) > 1)
        several_sizes = group["num_clients"].nunique() > 1
        for index, chosen, clients in zip(group.index, options, group["num_clients"], strict=True):
            parts = [f"{name}={chosen.get(name)}" for name in varying]
            if several_sizes:
                parts.append(f"clients={clients}")
            labels[index] = ",".join(parts) or str(defense)
    return labels


def privacy_utility_figure(table: pd.DataFrame) -> Figure:
    """Mean PSNR and label accuracy against test accuracy: a colour per defense, a marker per
    attack, each point labelled with the strength that varies."""
    ok = table[table["status"] == "ok"].astype(
        {"psnr": float, "label_accuracy": float, "test_accuracy": float}
    )
    ok = ok.assign(defense_options=ok.get("defense_options", "").fillna(""))
    keys = ["attack", "defense", "defense_options", "num_clients"]
    scores = ["psnr", "label_accuracy", "test_accuracy"]
    means = ok.groupby(keys, sort=True)[scores].mean().reset_index()
    labels = _strength_labels(means)
    colours = {
        name: f"C{number % 10}" for number, name in enumerate(sorted(ok["defense"].unique()))
    }
    markers = dict(zip(sorted(ok["attack"].unique()), "o^sDv", strict=False))
    figure, axes = _figure(2)
    for ax, score, name in zip(
        axes, ("psnr", "label_accuracy"), ("mean PSNR (dB)", "label accuracy"), strict=True
    ):
        for index, row in means.iterrows():
            ax.scatter(
                row["test_accuracy"],
                row[score],
                color=colours[row["defense"]],
                marker=markers[row["attack"]],
                label=f"{row['defense']} ({row['attack']})",
            )
            ax.annotate(
                labels[index],
                (row["test_accuracy"], row[score]),
                fontsize=6,
                xytext=(3, 3),
                textcoords="offset points",
            )
        handles, names = ax.get_legend_handles_labels()
        unique = dict(zip(names, handles, strict=True))
        ax.legend(unique.values(), unique.keys(), fontsize=6, ncol=2)
        ax.set_xlabel("global model's test accuracy (utility)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    return figure


@dataclass(frozen=True)
class Plot:
    """A report plot: drawn when column ``axis`` takes two values or more."""

    name: str
    axis: str
    draw: Callable[[pd.DataFrame], Figure | None]


PLOTS = (
    Plot("psnr_vs_batch_size", "batch_size", batch_size_figure),
    Plot("psnr_vs_audit_index", "model", audit_index_figure),
    Plot("psnr_vs_local_steps", "local_steps", local_steps_figure),
    Plot("privacy_utility", "defense", privacy_utility_figure),
)


def save_plots(table: pd.DataFrame, out: Path) -> list[Path]:
    """Write every plot that ``table`` has the variation for; return their paths."""
    paths = []
    for plot in PLOTS:
        if table.empty or table[plot.axis].nunique() < 2:
            continue
        figure = plot.draw(table)
        if figure is None:
            continue
        path = out / f"{plot.name}.png"
        figure.savefig(path, dpi=DPI)
        paths.append(path)
    return paths
