"""What a run writes: one JSON line per attacked update, a grid per round, a summary at the end."""

from __future__ import annotations

import json
import logging
import math
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import fmean
from time import perf_counter
from typing import Any

import torch
from torch import Tensor

from fl_leak.config import RunConfig, as_plain_dict
from fl_leak.defenses import build_defense
from fl_leak.report import save_image_grid

log = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"
SUMMARY_FILE = "summary.json"
GRID_FILE = "grid_round_{round}.png"
GRID_MAX_IMAGES = 64
SCORES = ("psnr", "ssim", "mse", "label_accuracy", "seconds", "gradient_relative_error")


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

    @classmethod
    def of_run(
        cls, settings: RunConfig, server_round: int, client: int | None, audit_index: int | None
    ) -> LeakRecord:
        """A record of ``settings`` for one client and round, outcome fields still empty."""
        fl = settings.fl
        defense = build_defense(settings.defense.name, settings.defense.options)
        return cls(
            round=server_round,
            client=client,
            attack=settings.attack.name,
            model=settings.model,
            data=settings.data.name,
            batch_size=fl.batch_size,
            defense=settings.defense.name,
            defense_options=defense.describe(),
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
        return {key: _finite(value) for key, value in asdict(self).items()}


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _mean(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None and math.isfinite(value)]
    return fmean(present) if present else None


@dataclass(frozen=True)
class Shown:
    """A batch's originals (with their labels) and its reconstructions, matched to them."""

    originals: Tensor
    labels: Tensor
    reconstructions: Tensor


@dataclass
class RoundImages:
    """Originals and their matched reconstructions of one round, with a title per image."""

    originals: list[Tensor] = field(default_factory=list)
    reconstructions: list[Tensor] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)


class ResultSink:
    """Writes a run's outputs into ``output_dir`` as they are made, and shows progress."""

    def __init__(self, output_dir: Path, settings: RunConfig, class_names: tuple[str, ...]) -> None:
        self.output_dir = output_dir
        self.settings = settings
        self.class_names = class_names
        self.records: list[LeakRecord] = []
        self.rounds: dict[int, dict[str, Any]] = {}
        self._images: dict[int, RoundImages] = {}
        self._painter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grid")
        self._grids: list[Future[None]] = []
        output_dir.mkdir(parents=True, exist_ok=True)
        self.results_path = output_dir / RESULTS_FILE
        self.results_path.write_text("")

    def add(self, record: LeakRecord, shown: Shown | None = None) -> None:
        """Append ``record`` to ``results.jsonl`` (flushed); keep its images for the grid."""
        with self.results_path.open("a") as handle:
            handle.write(json.dumps(record.as_json(), allow_nan=False) + "\n")
        self.records.append(record)
        if shown is not None:
            images = self._images.setdefault(record.round, RoundImages())
            images.originals.extend(shown.originals)
            images.reconstructions.extend(shown.reconstructions)
            images.titles.extend(
                f"{_source(record)} {self.class_names[int(label)]}" for label in shown.labels
            )

    def end_round(self, server_round: int, **timings: float) -> None:
        """Keep the round's figures and timings, log a progress line, start drawing its grid.

        The grid is drawn in a background thread, while the next round trains.
        """
        records = [record for record in self.records if record.round == server_round]
        ok = [record for record in records if record.status == "ok"]
        psnr = _mean([record.psnr for record in ok])
        running = _mean([record.psnr for record in self.records if record.status == "ok"])
        images = self._images.pop(server_round, None)
        if images is not None:
            self._grids.append(self._painter.submit(self._write_grid, server_round, images))
        self.rounds.setdefault(server_round, {}).update(
            records=len(records), ok=len(ok), mean_psnr=psnr, **timings
        )
        if not records:
            log.info("round %d/%d: no update attacked", server_round, self.settings.fl.rounds)
            return
        log.info(
            "round %d/%d: %d/%d updates attacked, %d errors, mean PSNR %s, running mean %s",
            server_round,
            self.settings.fl.rounds,
            len(ok),
            len(records),
            len(records) - len(ok),
            _db(psnr),
            _db(running),
        )

    def evaluation(self, server_round: int, accuracy: float, loss: float) -> None:
        """Keep (and log) the global model's test accuracy after ``server_round`` (0: initial)."""
        self.rounds.setdefault(server_round, {}).update(test_accuracy=accuracy, test_loss=loss)
        log.info("round %d: global model test accuracy %.3f", server_round, accuracy)

    def clients_evaluation(self, server_round: int, accuracy: float, loss: float) -> None:
        """Keep the global model's accuracy on the clients' own partitions (weighted mean)."""
        self.rounds.setdefault(server_round, {}).update(
            clients_accuracy=accuracy, clients_loss=loss
        )

    def write_summary(self, **extra: Any) -> Path:
        """Finish the grids, write ``summary.json``: counts, means, per-round figures, config."""
        self._painter.shutdown(wait=True)
        for grid in self._grids:
            grid.result()
        ok = [record for record in self.records if record.status == "ok"]
        final = self.rounds.get(self.settings.fl.rounds, {})
        summary = {
            "records": len(self.records),
            "ok": len(ok),
            "errors": len(self.records) - len(ok),
            "mean": {name: _mean([getattr(record, name) for record in ok]) for name in SCORES},
            "test_accuracy": final.get("test_accuracy"),
            "initial_test_accuracy": self.rounds.get(0, {}).get("test_accuracy"),
            "rounds": [{"round": number, **self.rounds[number]} for number in sorted(self.rounds)],
            **extra,
            "config": as_plain_dict(self.settings),
        }
        path = self.output_dir / SUMMARY_FILE
        path.write_text(json.dumps(_strict(summary), indent=2, allow_nan=False) + "\n")
        return path

    def _write_grid(self, server_round: int, images: RoundImages) -> None:
        start = perf_counter()
        count = min(len(images.originals), GRID_MAX_IMAGES)
        save_image_grid(
            torch.stack(images.originals[:count]),
            torch.stack(images.reconstructions[:count]),
            self.output_dir / GRID_FILE.format(round=server_round),
            titles=images.titles[:count],
            match=False,
        )
        self.rounds.setdefault(server_round, {})["grid_seconds"] = perf_counter() - start


def _source(record: LeakRecord) -> str:
    """Whose images a grid shows: ``c<client>``, or ``sum`` for an aggregate."""
    return "sum" if record.client is None else f"c{record.client}"


def _db(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} dB"


def _strict(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _strict(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_strict(item) for item in value]
    return _finite(value)
