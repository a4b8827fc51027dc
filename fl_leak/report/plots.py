"""Plots of a report (matplotlib, no display needed), chosen by what the sweep varies.

* ``psnr_by_attack_and_model.png``: PSNR per model (one row each) and attack (one colour each):
  every successful record as a dot, the mean with the standard deviation as a bar; drawn when
  two (attack, model) pairs or more were run;
* ``psnr_vs_<key>.png``, for each numeric setting the sweep varies (``batch_size``,
  ``local_steps``, ``lr``, ``num_clients``, a defense's strength such as
  ``defense.options.noise_multiplier``, ``attack.options.tolerance``, ...): PSNR (mean and
  standard deviation over successful records) against the key, one line per attack (and per
  value of every other categorical setting that varies: model, defense, ...), the other numeric
  keys pooled. ``psnr_vs_batch_size.png`` adds the audit index against batch size per model,
  ``psnr_vs_local_steps.png`` the gradient estimate's relative error against local steps;
* ``psnr_vs_audit_index.png``: mean PSNR per model against its audit index, per attack (and
  batch size), with Spearman's rank correlation; drawn when the index differs between models;
* ``test_accuracy.png``: the global model's test accuracy after each round (0: before training),
  one line per training setting (attack settings left out: they do not change training), seeds
  pooled; drawn when a job's ``summary.json`` holds it at two rounds or more;
* ``privacy_utility.png``: per defense and strength, the attacks' mean PSNR and label accuracy
  against the global model's test accuracy (the no-defense point included); drawn when the
  defense or its strength varies and the jobs hold a test accuracy.

A plot whose axis does not vary is not drawn; :func:`draw_plots` says why for each.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fl_leak.report.collect import NOT_A_SETTING, model_means, rank_correlations

DPI = 120
PANEL = (5.5, 4.2)  # inches per panel
MANY = 6  # series beyond which a legend goes below its axes
LONG = 40  # characters of a legend entry beyond which the legend goes below its axes
LINE = 1.6  # height of a legend entry, in font sizes
TITLE_POINTS = 9.0
AUDIT_LABEL = "audit index (0: every layer uniquely solvable)"
PSNR_LABEL = "PSNR (dB)"

CATEGORICAL_FIELDS = ("attack", "model", "data", "defense", "local_data", "partition", "dtype")
NUMERIC_FIELDS = (
    "batch_size",
    "local_steps",
    "local_epochs",
    "lr",
    "num_clients",
    "rounds",
    "alpha",
    "fraction_train",
)


@dataclass(frozen=True)
class PlotOutcome:
    """A plot of the report: its file name, what it shows, and where it was written (``None``
    when it was not drawn, with the ``reason``)."""

    name: str
    about: str
    path: Path | None = None
    reason: str = ""


def varies(column: pd.Series) -> bool:
    """Whether ``column`` takes two values or more (empty cells left out)."""
    return bool(column.dropna().astype(str).nunique() > 1)


def _numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


def _repeats(table: pd.DataFrame, key: str, others: Sequence[str]) -> bool:
    """Whether ``key`` repeats one of ``others`` wherever it is set (``fl.batch_size`` and the
    record's ``batch_size``)."""
    present = table[key].notna()

    def same(other: str) -> bool:
        mine, theirs = table.loc[present, key], table.loc[present, other]
        if _numeric(mine) and _numeric(theirs):
            return bool((mine.astype(float) == theirs.astype(float)).all())
        return bool((mine.astype(str) == theirs.astype(str)).all())

    return any(same(other) for other in others)


def swept_keys(table: pd.DataFrame, settings: Sequence[str]) -> tuple[list[str], list[str]]:
    """The numeric and the categorical settings that vary between the records of ``table``.

    Candidates are the record's own settings (``batch_size``, ``lr``, ``model``, ...) and the
    overrides in ``settings``; an override that repeats a record field is left out.
    """
    extra = [key for key in settings if key not in (*NUMERIC_FIELDS, *CATEGORICAL_FIELDS)]
    numeric: list[str] = []
    categorical: list[str] = []
    for key in (*NUMERIC_FIELDS, *CATEGORICAL_FIELDS, *extra):
        if key not in table.columns or key.startswith(NOT_A_SETTING) or not varies(table[key]):
            continue
        chosen = numeric if _numeric(table[key]) else categorical
        if not _repeats(table, key, chosen):
            chosen.append(key)
    return numeric, categorical


def _label(key: tuple[object, ...], columns: Sequence[str], varying: set[str]) -> str:
    return " ".join(
        f"{column}={value}"
        for value, column in zip(key, columns, strict=True)
        if column in varying and not pd.isna(value)  # type: ignore[call-overload]
    )


def _legend(ax: Axes, fontsize: float = 7) -> float:
    """The legend of ``ax``, one entry per label: inside the axes when short, else below them.
    Returns the inches to add to the figure's height for a legend below (0 for one inside)."""
    handles, names = ax.get_legend_handles_labels()
    if not handles:
        return 0.0
    unique = dict(zip(names, handles, strict=True))
    if len(unique) <= MANY and max(len(name) for name in unique) <= LONG:
        ax.legend(unique.values(), unique.keys(), fontsize=fontsize)
        return 0.0
    ax.legend(
        unique.values(),
        unique.keys(),
        fontsize=fontsize,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.14),
        borderaxespad=0,
    )
    return len(unique) * fontsize * LINE / 72 + 0.3


def _grow(figure: Figure, extra: float) -> None:
    """Make ``figure`` ``extra`` inches taller (room for legends below the axes)."""
    width, height = figure.get_size_inches()
    figure.set_size_inches(width, height + extra)


def _x_axis(ax: Axes, values: pd.Series, name: str) -> None:
    """``name`` on the x axis: logarithmic when positive values span a factor of 8 or more,
    ticks at the values themselves when there are few."""
    numbers = sorted(set(values.dropna().astype(float)))
    if numbers and numbers[0] > 0 and numbers[-1] / numbers[0] >= 8:
        powers_of_two = all(
            number.is_integer() and int(number) & (int(number) - 1) == 0 for number in numbers
        )
        ax.set_xscale("log", base=2 if powers_of_two else 10)
    if 1 < len(numbers) <= 12:
        ax.set_xticks(numbers, [f"{number:g}" for number in numbers])
        ax.minorticks_off()
    ax.set_xlabel(name)


def _lines(
    ax: Axes,
    table: pd.DataFrame,
    x: str,
    y: str,
    series: Sequence[str],
    successful_only: bool = True,
) -> float:
    """``y`` (mean, std as error bars) against ``x``, one line per value of ``series``; returns
    the room its legend needs below the axes (inches).

    With ``successful_only``, rows whose ``status`` is not ``ok`` are left out of the means and
    counted in the label; empty and infinite values of ``y`` are left out.
    """
    series = list(series) or ["status"]
    varying = {column for column in series if varies(table[column])}
    for key, group in table.groupby(series, sort=True, dropna=False):
        used = group[group["status"] == "ok"] if successful_only else group
        values = used.assign(**{y: used[y].astype(float)})
        values = values[np.isfinite(values[y])]
        stats = values.groupby(x, sort=True)[y].agg(["mean", "std"]).reset_index()
        failed = len(group) - len(used)
        label = _label(key, series, varying) or y
        if failed:
            label += f" ({failed}/{len(group)} failed)"
        ax.errorbar(
            stats[x], stats["mean"], yerr=stats["std"].fillna(0), marker="o", capsize=3, label=label
        )
    _x_axis(ax, table[x], x)
    ax.grid(alpha=0.3)
    return _legend(ax)


def _figure(panels: int, width: float | None = None) -> tuple[Figure, list[Axes]]:
    figure = Figure(figsize=(width or PANEL[0] * panels, PANEL[1]), layout="constrained")
    return figure, list(figure.subplots(1, panels, squeeze=False)[0])


def _pooled_title(figure: Figure, pooled: Sequence[str], what: str) -> None:
    """``what`` as the figure's title, with the settings pooled, wrapped to the figure's width."""
    text = what + (f"; pooled over {', '.join(pooled)}" if pooled else "")
    characters = int(figure.get_figwidth() * 72 / (TITLE_POINTS * 0.6))
    figure.suptitle(textwrap.fill(text, characters), fontsize=TITLE_POINTS)


def numeric_figure(
    table: pd.DataFrame, x: str, numeric: Sequence[str], categorical: Sequence[str]
) -> Figure:
    """PSNR against the numeric setting ``x``, one line per attack and per value of the other
    varying ``categorical`` settings; the other ``numeric`` settings pooled. Against batch size,
    a second panel shows the audit index per model; against local steps, the gradient
    estimate's relative error."""
    data = table[table[x].notna()]
    series = ["attack", *(key for key in categorical if key != "attack")]
    pooled = [key for key in numeric if key != x and varies(data[key])]
    panels = [("psnr", PSNR_LABEL, series, True, False)]
    if x == "batch_size" and data["audit_index"].notna().any():
        panels.append(("audit_index", AUDIT_LABEL, ["model"], False, False))
    errors = data.get("gradient_relative_error", pd.Series(dtype=float)).astype(float)
    if x == "local_steps" and (errors > 0).any():
        label = "relative error of the gradient estimate"
        panels.append(("gradient_relative_error", label, series, True, True))
    figure, axes = _figure(len(panels))
    room = 0.0
    for ax, (y, name, keys, successful_only, log) in zip(axes, panels, strict=True):
        room = max(room, _lines(ax, data, x, y, keys, successful_only))
        ax.set_ylabel(name)
        if log:
            ax.set_yscale("log")
    _grow(figure, room)
    _pooled_title(figure, pooled, "mean and standard deviation over successful records")
    return figure


def attack_model_figure(
    table: pd.DataFrame, pooled: Sequence[str], rows: Sequence[str] = ("model",)
) -> Figure:
    """PSNR per model (a row each, or one per value of ``rows``: the model and the other
    categorical settings that vary) and attack (a colour each): every successful record a dot,
    the mean a marker with the standard deviation as a bar."""
    rows = list(rows)
    keys = table[rows].drop_duplicates().sort_values(rows, key=lambda c: c.astype(str))
    names = [
        " ".join(
            [
                str(key[0]),
                *(f"{c}={v}" for c, v in zip(rows[1:], key[1:], strict=True) if not pd.isna(v)),
            ]
        )
        for key in keys.itertuples(index=False)
    ]
    attacks = sorted(table["attack"].dropna().unique(), key=str)
    step = 0.6 / len(attacks)
    height = 1.6 + 0.3 * len(names) * max(1.0, 0.6 * len(attacks))
    width = max(7.0, 5.0 + 0.07 * max(len(name) for name in names))  # room for the row names
    figure = Figure(figsize=(width, height), layout="constrained")
    ax = figure.subplots()
    for number, attack in enumerate(attacks):
        colour = f"C{number % 10}"
        records = table[table["attack"] == attack]
        offset = (number - (len(attacks) - 1) / 2) * step
        failed = exact = 0
        for position, key in enumerate(keys.itertuples(index=False)):
            chosen = np.ones(len(records), dtype=bool)
            for column, value in zip(rows, key, strict=True):
                column_values = records[column]
                chosen &= (
                    column_values.isna().to_numpy()
                    if pd.isna(value)
                    else (column_values == value).to_numpy()
                )
            group = records[chosen]
            ok = group[group["status"] == "ok"]["psnr"].astype(float)
            failed += len(group) - len(ok)
            exact += int(ok.isna().sum())
            values = ok[np.isfinite(ok)]
            if values.empty:
                continue
            y = position + offset
            ax.scatter(values, np.full(len(values), y), s=10, alpha=0.35, color=colour)
            spread = values.std() if len(values) > 1 else 0.0
            ax.errorbar(values.mean(), y, xerr=spread, fmt="D", capsize=3, color=colour)
        notes = [f"{failed}/{len(records)} failed"] if failed else []
        notes += [f"{exact} exact, not drawn"] if exact else []
        label = str(attack) + (f" ({', '.join(notes)})" if notes else "")
        ax.scatter([], [], marker="D", color=colour, label=label)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.set_xlabel(PSNR_LABEL)
    ax.grid(alpha=0.3, axis="x")
    _grow(figure, _legend(ax))
    what = "PSNR per model and attack over successful records (dots: records; diamonds: means "
    _pooled_title(figure, pooled, what + "with their standard deviation)")
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
    ax.set_xlabel(AUDIT_LABEL)
    ax.set_ylabel(f"mean {PSNR_LABEL}")
    ax.grid(alpha=0.3)
    _grow(figure, _legend(ax))
    return figure


def accuracy_figure(rounds: pd.DataFrame, keys: Sequence[str]) -> Figure:
    """Test accuracy after each round, one line per value of ``keys`` (mean over its jobs, the
    standard deviation as a band where there are several)."""
    data = rounds[rounds["test_accuracy"].notna()].astype({"test_accuracy": float})
    figure, (ax,) = _figure(1)
    groups = data.groupby(list(keys), sort=True, dropna=False) if keys else [((), data)]
    for key, group in groups:
        stats = group.groupby("round", sort=True)["test_accuracy"].agg(["mean", "std"])
        label = _label(tuple(key), keys, set(keys)) or "test accuracy"
        jobs = group["job"].nunique()
        if jobs > 1:
            label += f" ({jobs} jobs)"
        (line,) = ax.plot(stats.index, stats["mean"], marker="o", label=label)
        spread = stats["std"].fillna(0)
        ax.fill_between(
            stats.index,
            stats["mean"] - spread,
            stats["mean"] + spread,
            alpha=0.2,
            color=line.get_color(),
        )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round (0: the initial model)")
    ax.set_ylabel("global model's test accuracy (fraction)")
    ax.grid(alpha=0.3)
    _grow(figure, _legend(ax))
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
                marker=markers.get(row["attack"], "o"),
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


def file_name(key: str) -> str:
    """The file name of the plot of PSNR against ``key``."""
    return "psnr_vs_" + re.sub(r"[^A-Za-z0-9._-]", "_", key) + ".png"


def _successful_psnr(table: pd.DataFrame) -> pd.Series:
    psnr = table.loc[table["status"] == "ok", "psnr"].astype(float)
    return psnr[np.isfinite(psnr)]


Draw = Callable[[], Figure | None] | None


def _plan(
    table: pd.DataFrame, rounds: pd.DataFrame, settings: Sequence[str]
) -> list[tuple[PlotOutcome, Draw]]:
    """Every plot the report considers: its outcome so far, and how to draw it (or ``None``)."""
    plans: list[tuple[PlotOutcome, Draw]] = []
    numeric, categorical = swept_keys(table, settings)
    none_ok = _successful_psnr(table).empty

    about = (
        "PSNR per model (a row per model and value of the other categorical settings that "
        "vary) and attack (a colour each): every successful record, the mean and its spread"
    )
    rows = ["model", *(key for key in categorical if key not in ("attack", "model"))]
    points = table[["attack", *rows]].astype(str).drop_duplicates()
    name = "psnr_by_attack_and_model.png"
    if len(points) < 2:
        reason = "one attack and one model only, and no other categorical setting varies"
        plans.append((PlotOutcome(name, about, reason=reason), None))
    elif none_ok:
        plans.append((PlotOutcome(name, about, reason="no successful record with a PSNR"), None))
    else:
        plot = partial(attack_model_figure, table, numeric, rows)
        plans.append((PlotOutcome(name, about), plot))

    for key in ("batch_size", "local_steps"):  # the studies' plots, listed even when not drawn
        if key not in numeric:
            about = f"PSNR against {key}, one line per attack"
            reason = f"{key} is the same for every record"
            plans.append((PlotOutcome(file_name(key), about, reason=reason), None))
    for key in numeric:
        about = f"PSNR against {key}, one line per attack" + (
            f" and per value of {', '.join(k for k in categorical if k != 'attack')}"
            if any(k != "attack" for k in categorical)
            else ""
        )
        if key == "batch_size":
            about += "; beside it, the audit index against batch size per model"
        if key == "local_steps":
            about += "; beside it, the gradient estimate's relative error"
        outcome = PlotOutcome(file_name(key), about)
        if none_ok:
            plans.append((_skip(outcome, "no successful record with a PSNR"), None))
        else:
            plans.append((outcome, partial(numeric_figure, table, key, numeric, categorical)))

    about = "mean PSNR per model against its audit index, with Spearman's rank correlation"
    outcome = PlotOutcome("psnr_vs_audit_index.png", about)
    means = model_means(table).dropna(subset=["psnr", "audit_index"]) if not none_ok else None
    if means is None or means.empty:
        plans.append((_skip(outcome, "no model has both a mean PSNR and an audit index"), None))
    elif means["model"].nunique() < 2:
        plans.append((_skip(outcome, "one model only"), None))
    elif means["audit_index"].nunique() < 2:
        value = means["audit_index"].iloc[0]
        reason = f"the audit index is the same ({value:g}) for every model"
        plans.append((_skip(outcome, reason), None))
    else:
        plans.append((outcome, lambda: audit_index_figure(table)))

    about = "the global model's test accuracy after each round, one line per training setting"
    outcome = PlotOutcome("test_accuracy.png", about)
    evaluated = rounds[rounds["test_accuracy"].notna()] if "test_accuracy" in rounds else rounds
    if evaluated.empty or evaluated.groupby("job")["round"].nunique().max() < 2:
        reason = "no job's summary.json holds a test accuracy at two rounds or more"
        plans.append((_skip(outcome, reason), None))
    else:
        keys = [
            key
            for key in settings
            if key in evaluated.columns
            and not key.startswith(("attack", *NOT_A_SETTING))
            and varies(evaluated[key])
        ]
        plans.append((outcome, lambda: accuracy_figure(evaluated, keys)))

    about = "mean PSNR and label accuracy against the global model's test accuracy, per defense"
    outcome = PlotOutcome("privacy_utility.png", about)
    defended = any(
        column in table.columns and varies(table[column].fillna(""))
        for column in ("defense", "defense_options")
    )
    if not defended:
        plans.append((_skip(outcome, "the defense and its strength are the same throughout"), None))
    elif table["test_accuracy"].isna().all():
        plans.append((_skip(outcome, "no job's summary.json holds a test accuracy"), None))
    elif none_ok:
        plans.append((_skip(outcome, "no successful record"), None))
    else:
        plans.append((outcome, lambda: privacy_utility_figure(table)))
    return plans


def _skip(outcome: PlotOutcome, reason: str) -> PlotOutcome:
    return PlotOutcome(outcome.name, outcome.about, reason=reason)


def draw_plots(
    table: pd.DataFrame,
    out: Path,
    rounds: pd.DataFrame | None = None,
    settings: Sequence[str] = (),
) -> list[PlotOutcome]:
    """Draw into ``out`` every plot that ``table`` (and the per-round ``rounds``) have the
    variation for; return every plot considered, drawn (with its path) or not (with why)."""
    if table.empty:
        return []
    rounds = rounds if rounds is not None else pd.DataFrame(columns=["job", "round"])
    outcomes = []
    for outcome, draw in _plan(table, rounds, settings):
        figure = draw() if draw is not None else None
        if figure is None:
            outcomes.append(outcome if draw is None else _skip(outcome, "nothing to draw"))
            continue
        path = out / outcome.name
        figure.savefig(path, dpi=DPI)
        outcomes.append(PlotOutcome(outcome.name, outcome.about, path))
    return outcomes


def save_plots(table: pd.DataFrame, out: Path) -> list[Path]:
    """Write every plot that ``table`` has the variation for; return their paths."""
    return [outcome.path for outcome in draw_plots(table, out) if outcome.path is not None]
