"""What a run writes, and the schema of its records: no Flower, no drawing.

Every ``fl-leak`` job writes into its output directory ``results.jsonl`` (one :class:`LeakRecord`
per attacked update, flushed as it is made), ``summary.json``, ``grid_round_<r>.png`` and
``status.json`` (``running`` when it starts, then ``ok``, ``failed`` or ``interrupted``).
"""

from __future__ import annotations

import json
import math
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fl_leak.config import RunConfig
from fl_leak.models.target import model_name

RESULTS_FILE = "results.jsonl"
SUMMARY_FILE = "summary.json"
STATUS_FILE = "status.json"
GRID_FILE = "grid_round_{round}.png"
SCORES = ("psnr", "ssim", "mse", "label_accuracy", "seconds", "gradient_relative_error")


STATUSES = ("running", "ok", "partial", "failed", "interrupted")


def write_status(
    output_dir: Path,
    status: str,
    error: BaseException | None = None,
    reason: str | None = None,
) -> None:
    """Write a job's ``status.json``: one of ``STATUSES``, with ``error`` or a ``reason``.

    ``partial``: some updates were attacked, some failed; ``failed``: the run raised, or every
    attack failed; ``interrupted``: stopped by a signal, outputs hold what was done.
    """
    if status not in STATUSES:
        raise ValueError(f"status {status!r} is not one of {STATUSES}")
    content: dict[str, Any] = {"status": status}
    if reason is not None:
        content["reason"] = reason
    if error is not None:
        content["error"] = f"{type(error).__name__}: {error}"
        content["traceback"] = "".join(traceback.format_exception(error))
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / STATUS_FILE).write_text(json.dumps(content, indent=1) + "\n")


def outcome(ok: int, errors: int) -> str:
    """A finished run's status from its record counts: ``ok`` (every update attacked),
    ``partial`` (some attacked, some failed) or ``failed`` (every one failed, or none arrived:
    every run attacks at least one round)."""
    if ok and errors:
        return "partial"
    return "ok" if ok else "failed"


@dataclass
class LeakRecord:
    """One attacked update (or a failure in place of one): a line of ``results.jsonl``.

    ``status`` is ``ok`` or ``error``; ``stage`` says what failed (``client``: the client raised;
    ``attack``: the gradient estimate, the attack or its scoring raised) and ``error`` how.
    ``seconds`` is the attack's time; ``steps`` the local steps the gradient estimate divided by;
    ``gradient_relative_error`` compares that estimate with the true gradient of the first step;
    ``epsilon`` is the DP-SGD accountant's epsilon the client reported (``defense=dp_sgd``), and
    ``defense_options`` the defense's strength (``key=value,...``); ``aggregated_clients`` is set
    when the attacked update is the aggregate of that many clients (secure aggregation: ``client``
    is None and the attacked batch holds ``aggregated_clients * batch_size`` samples).
    ``samples`` is how many samples the attack reconstructed and was scored against (the batch;
    for a FedAvg attack, every sample the client trained on in the round).
    ``shortfall`` says why a reconstruction fell short of exact where the audit calls the model
    fully exposed (index 0), see :mod:`fl_leak.fl.shortfall`.
    The remaining fields repeat the run's settings, so records from many runs form one table.
    """

    round: int
    client: int | None
    attack: str
    model: str
    data: str
    batch_size: int
    defense: str
    defense_options: str
    num_clients: int
    rounds: int
    local_steps: int
    local_epochs: int
    local_data: str
    lr: float
    partition: str
    alpha: float
    fraction_train: float
    dtype: str
    seed: int
    audit_index: int | None = None
    status: str = "ok"
    stage: str | None = None
    error: str | None = None
    psnr: float | None = None
    ssim: float | None = None
    mse: float | None = None
    label_accuracy: float | None = None
    labels_recovered: bool | None = None
    seconds: float | None = None
    steps: int | None = None
    gradient_relative_error: float | None = None
    epsilon: float | None = None
    aggregated_clients: int | None = None
    shortfall: str | None = None
    samples: int | None = None

    @classmethod
    def of_run(
        cls,
        settings: RunConfig,
        server_round: int,
        client: int | None,
        audit_index: int | None,
        defense_options: str,
    ) -> LeakRecord:
        """A record of ``settings`` for one client and round, outcome fields still empty.

        ``defense_options`` is the defense's strength as ``Defense.describe`` writes it.
        """
        fl = settings.fl
        return cls(
            round=server_round,
            client=client,
            attack=settings.attack.name,
            model=model_name(settings.model),
            data=settings.data.name,
            batch_size=fl.batch_size,
            defense=settings.defense.name,
            defense_options=defense_options,
            num_clients=fl.num_clients,
            rounds=fl.rounds,
            local_steps=fl.local_steps,
            local_epochs=fl.local_epochs,
            local_data=fl.local_data.value,
            lr=fl.lr,
            partition=fl.partition.value,
            alpha=fl.alpha,
            fraction_train=fl.fraction_train,
            dtype=settings.dtype.value,
            seed=settings.seed,
            audit_index=audit_index,
        )

    def fail(self, stage: str, error: str) -> LeakRecord:
        """Mark this record failed at ``stage``; returns itself."""
        self.status, self.stage, self.error = "error", stage, error
        return self

    def as_json(self) -> dict[str, Any]:
        """The record as strict JSON values (non-finite floats become null)."""
        return {key: finite(value) for key, value in asdict(self).items()}


def finite(value: Any) -> Any:
    """``value``, or None where it is a non-finite float (strict JSON)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value
