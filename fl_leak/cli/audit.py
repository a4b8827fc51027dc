"""``fl-leak-audit``: per-layer solvability and the security index of an architecture.

fl-leak-audit model=cnn6d
fl-leak-audit model=lenet batch_sizes=[1,2,4,8,16] output=lenet_audit.csv
fl-leak-audit --help

Its defaults are fl-leak's: the model and data set of ``conf/config.yaml``; the input shape and
the class count come from the data set (``input_shape``/``num_classes`` override them). Settings
that cannot run are refused before any work, named, with exit code 2.
"""

from __future__ import annotations

import csv
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from fl_leak.config import CONF_DIR, DataConfig, unknown_keys
from fl_leak.errors import FlLeakError
from fl_leak.metrics.audit import AuditLayer, AuditReport, audit, audit_device
from fl_leak.models import build_model, list_models, model_name

CONFIG_NAME = "audit"
NOISE_IMAGES = 256  # images whose statistics the noise prediction takes
SCHEMA_NAME = "fl_leak_audit_schema"


@dataclass
class AuditCommand:
    """The settings of ``fl-leak-audit`` (``conf/audit.yaml``)."""

    model: Any = "cnn2_c1"  # a registered name, or a _target_ mapping (fl_leak.models.target)
    data: DataConfig = field(default_factory=DataConfig)
    input_shape: list[int] | None = None  # None: the data set's
    num_classes: int | None = None  # None: the data set's
    batch_sizes: list[int] = field(default_factory=lambda: [1])
    seed: int = 0
    max_dense: int = 6000
    rtol: float = 1e-4
    threads: int | None = 1  # torch threads (fl_leak.threads); None: torch's own count
    device: str = "cpu"  # where the dense linear algebra runs (cpu, cuda)
    noise_levels: list[float] = field(default_factory=list)  # predicted PSNR under update noise
    output: str | None = None


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


def _problems(command: AuditCommand) -> list[str]:
    """Every setting of ``command`` that cannot run, named."""
    found = []
    if not command.batch_sizes or any(size < 1 for size in command.batch_sizes):
        found.append(f"batch_sizes={command.batch_sizes} must list batch sizes of at least 1")
    if command.max_dense < 0:
        found.append(f"max_dense={command.max_dense} must not be negative")
    if command.rtol < 0:
        found.append(f"rtol={command.rtol} must not be negative")
    if command.threads is not None and command.threads < 1:
        found.append(f"threads={command.threads} must be at least 1 (or null: torch's count)")
    if command.noise_levels and 1 not in command.batch_sizes:
        found.append("noise_levels: the noise prediction is for batch size 1; add 1 to batch_sizes")
    if any(not level > 0 for level in command.noise_levels):
        found.append(f"noise_levels={command.noise_levels} must be positive")
    try:
        audit_device(command.device)
    except FlLeakError as error:
        found.append(str(error))
    if isinstance(command.model, str) and command.model not in list_models():
        found.append(f"model={command.model!r} is unknown; known: {', '.join(list_models())}")
    if command.output is not None:
        output = Path(command.output)
        if output.is_dir() or not output.parent.is_dir():
            found.append(f"output={command.output} must be a file in an existing folder")
    return found


def _shape_and_classes(command: AuditCommand) -> tuple[tuple[int, ...], int]:
    """The input shape and class count: as given, else the data set's."""
    if command.input_shape is not None and command.num_classes is not None:
        return tuple(command.input_shape), command.num_classes
    from fl_leak.data import load_dataset

    data = command.data
    info = load_dataset(data.name, data.root, train=True, download=data.download).info
    shape = tuple(command.input_shape) if command.input_shape else info.input_shape
    classes = command.num_classes or len(info.class_names)
    return shape, classes


def _noise_images(command: AuditCommand) -> Tensor:
    """The data set's first ``NOISE_IMAGES`` training images in ``[0, 1]``: the statistics of the
    noise prediction."""
    from fl_leak.data import load_dataset

    data = command.data
    images = load_dataset(data.name, data.root, train=True, download=data.download).images
    return images[:NOISE_IMAGES].double() / 255


def precision_note(rtol: float) -> str:
    """What precision the audit's verdict assumes."""
    if rtol == 0:
        return (
            "precision: rank and deficiency assume exact arithmetic (float64 updates); the "
            "numerical count was skipped (rtol=0), so a float32 update may recover less"
        )
    return (
        "precision: rank and deficiency assume exact arithmetic; 'numerical' counts the "
        f"directions below {rtol:g} x the largest singular value, which a float32 update "
        "(about 7 digits) leaves unresolved, and 'kink' the ReLU outputs whose side rounding "
        "decides: full rank needs all three 0, and then float32 updates are recovered too"
    )


def run(command: AuditCommand) -> list[AuditReport]:
    """Audit ``command.model`` at every batch size; print the tables.

    Raises :class:`FlLeakError` naming every setting that cannot run, before any work.
    """
    problems = _problems(command)
    name = model_name(command.model)
    if problems:
        raise FlLeakError("invalid settings:\n  " + "\n  ".join(problems))
    try:
        input_shape, num_classes = _shape_and_classes(command)
        model = build_model(command.model, input_shape, num_classes, seed=command.seed)
    except (OSError, RuntimeError, ValueError) as error:
        raise FlLeakError(f"model={name!r} on data={command.data.name!r}: {error}") from error
    images = _noise_images(command) if command.noise_levels else None
    reports = []
    for batch_size in command.batch_sizes:
        print(f"auditing {name} at batch size {batch_size} ...", file=sys.stderr, flush=True)
        report = audit(
            model,
            input_shape,
            batch_size,
            command.seed,
            command.max_dense,
            rtol=command.rtol,
            threads=command.threads,
            device=command.device,
            noise_levels=command.noise_levels if batch_size == 1 else (),
            noise_images=images,
        )
        shape = f"input {input_shape}, {num_classes} classes"
        print(f"\n{name}, {shape}, batch size {batch_size}")
        print(report.table(), flush=True)
        reports.append(report)
    if len(reports) > 1:
        print("\n" + deficiency_by_batch(reports))
    print("\n" + precision_note(command.rtol))
    if command.output:
        write_csv(reports, name, Path(command.output))
        print(f"\nwrote {command.output}")
    return reports


HELP = """fl-leak-audit: per-layer solvability and the security index of an architecture (no data
is attacked; the audit probes the model at a seeded random input).

Usage: fl-leak-audit [key=value ...]
  fl-leak-audit model=cnn6d
  fl-leak-audit model=lenet batch_sizes=[1,2,4,8,16] output=lenet_audit.csv

Settings, with the values these overrides give:
{config}

  model        the network (fl-leak's model group):
{models}
  data         the data set whose input shape and class count the model takes:
{datasets}
  input_shape, num_classes   override the data set's
  batch_sizes  one table per batch size, then deficiency per layer against batch size
  seed         the model's weights and the probe input
  max_dense    exact SVD rank while min(rows, unknowns) <= max_dense, else a structural bound
  rtol         count singular values below rtol x the largest ('numerical'; 0 skips it)
  threads      torch threads for the audit (1 is fastest on small layers; null: torch's count)
  device       where the dense linear algebra runs: cpu, or cuda where one is available
  noise_levels predicted PSNR of the noise-aware linear attack at these relative update noise
               levels, e.g. [1e-3,1e-2] (batch size 1; the data set's images give its statistics)
  output       a CSV with one row per (batch size, layer)
"""


def help_text(overrides: Sequence[str]) -> str:
    """The command's help: its own settings only, with the values ``overrides`` give."""
    from fl_leak.data import list_datasets

    register_schema()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        config = compose(config_name=CONFIG_NAME, overrides=list(overrides))
    return HELP.format(
        config=textwrap.indent(OmegaConf.to_yaml(config).rstrip(), "  "),
        models=_listing(list_models()),
        datasets=_listing(list_datasets()),
    )


def _listing(names: Sequence[str]) -> str:
    return textwrap.fill(
        ", ".join(names), width=98, initial_indent=" " * 15, subsequent_indent=" " * 15
    )


def register_schema() -> None:
    """Store :class:`AuditCommand` in Hydra's ConfigStore (``conf/audit.yaml`` extends it)."""
    ConfigStore.instance().store(name=SCHEMA_NAME, node=AuditCommand)


@hydra.main(config_path=str(CONF_DIR), config_name=CONFIG_NAME, version_base="1.3")
def _main(cfg: DictConfig) -> None:
    try:
        unknown = unknown_keys(cfg, AuditCommand)
        if unknown:
            raise FlLeakError(f"unknown settings: {', '.join(unknown)} (see fl-leak-audit --help)")
        command = OmegaConf.to_object(cfg)
        assert isinstance(command, AuditCommand)
        run(command)
    except FlLeakError as error:
        print(f"fl-leak-audit: {error}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    """Console entry point; ``--help`` shows this command's settings only."""
    if "--help" in sys.argv[1:] or "-h" in sys.argv[1:]:
        overrides = [arg for arg in sys.argv[1:] if arg not in ("--help", "-h")]
        print(help_text(overrides))
        return
    register_schema()
    _main()


if __name__ == "__main__":
    main()
