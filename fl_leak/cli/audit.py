"""``fl-leak-audit``: per-layer solvability and the security index of an architecture.

fl-leak-audit model=cnn6d
fl-leak-audit model=lenet batch_sizes=[1,2,4,8,16] output=lenet_audit.csv
fl-leak-audit --help
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from fl_leak.errors import FlLeakError
from fl_leak.metrics.audit import AuditLayer, AuditReport, audit
from fl_leak.models import UnknownModelError, build_model

CONF = str(Path(__file__).resolve().parent.parent / "conf")


def deficiency_by_batch(reports: list[AuditReport]) -> str:
    """Each layer's deficiency (rows) against batch size (columns), the index, and full rank.

    A cell reads ``deficiency`` or, where the numerical count was made and differs,
    ``deficiency/numerical``.
    """
    sizes = [report.batch_size for report in reports]
    lines = [
        "deficiency per layer against batch size (deficiency/numerical where they differ)",
        f"{'layer':<8}" + "".join(f"{'B=' + str(b):>16}" for b in sizes),
    ]
    for position, layer in enumerate(reports[0].layers):
        cells = "".join(f"{_cell(report.layers[position]):>16}" for report in reports)
        lines.append(f"{layer.index:<8}{cells}")
    lines.append(f"{'index':<8}" + "".join(f"{report.index:>16}" for report in reports))
    lines.append(f"{'full':<8}" + "".join(f"{report.full_rank!s:>16}" for report in reports))
    return "\n".join(lines)


def _cell(layer: AuditLayer) -> str:
    numerical = layer.numerical_deficiency
    if numerical is None or numerical == layer.deficiency:
        return str(layer.deficiency)
    return f"{layer.deficiency}/{numerical}"


def write_csv(reports: list[AuditReport], model: str, path: Path) -> None:
    """One row per (batch size, layer)."""
    rows = [
        {
            "model": model,
            "batch_size": report.batch_size,
            "security_index": report.index,
            **layer.as_dict(),
        }
        for report in reports
        for layer in report.layers
    ]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def run(cfg: DictConfig) -> list[AuditReport]:
    """Audit ``cfg.model`` at every batch size of ``cfg.batch_sizes``; print the tables."""
    model = build_model(cfg.model, tuple(cfg.input_shape), cfg.num_classes, seed=cfg.seed)
    reports = []
    for batch_size in cfg.batch_sizes:
        print(f"auditing {cfg.model} at batch size {batch_size} ...", file=sys.stderr, flush=True)
        report = audit(
            model,
            tuple(cfg.input_shape),
            int(batch_size),
            cfg.seed,
            cfg.max_dense,
            rtol=cfg.rtol,
        )
        print(f"\n{cfg.model}, input {tuple(cfg.input_shape)}, batch size {batch_size}")
        print(report.table(), flush=True)
        reports.append(report)
    if len(reports) > 1:
        print("\n" + deficiency_by_batch(reports))
    if cfg.output:
        write_csv(reports, cfg.model, Path(cfg.output))
        print(f"\nwrote {cfg.output}")
    return reports


@hydra.main(config_path=CONF, config_name="audit", version_base="1.3")
def _main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except (FlLeakError, UnknownModelError) as error:
        print(f"fl-leak-audit: {error}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    """Console entry point."""
    _main()


if __name__ == "__main__":
    main()
