"""The realistic study's table combines reports setting by setting (its figure.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pandas as pd


def _figure():
    path = Path(__file__).parents[1] / "experiments" / "realistic" / "figure.py"
    spec = importlib.util.spec_from_file_location("realistic_figure", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _records(run: str, rows: list[tuple[str, int, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"attack": a, "local_epochs": e, "lr": lr, "run": run} for a, e, lr in rows]
    )


def test_a_later_report_replaces_every_attack_of_its_settings_and_nothing_else() -> None:
    first = _records(
        "first",
        [
            ("linear", 1, 0.01),
            ("linear", 1, 0.1),
            ("linear", 3, 0.01),
            ("linear", 3, 0.1),
            ("ig", 3, 0.1),  # an attack the later report does not hold: dropped with its setting
            ("fedavg_hybrid", 1, 0.01),
        ],
    )
    later = _records("later", [("linear", 3, 0.01), ("linear", 3, 0.1), ("fedavg_hybrid", 3, 0.1)])

    combined = _figure().combine([first, later])

    got = sorted(map(tuple, combined[["run", "attack", "local_epochs", "lr"]].to_numpy().tolist()))
    assert got == sorted(
        [
            ("first", "linear", 1, 0.01),
            ("first", "linear", 1, 0.1),
            ("first", "fedavg_hybrid", 1, 0.01),
            ("later", "linear", 3, 0.01),
            ("later", "linear", 3, 0.1),
            ("later", "fedavg_hybrid", 3, 0.1),
        ]
    )


def test_one_report_or_the_same_report_twice_is_that_report() -> None:
    figure = _figure()
    report = _records("only", [("linear", 1, 0.01), ("dlg", 3, 0.1)])

    assert figure.combine([report]).equals(report)
    assert (
        figure.combine([report, report])
        .sort_values("attack")
        .reset_index(drop=True)
        .equals(report.sort_values("attack").reset_index(drop=True))
    )
