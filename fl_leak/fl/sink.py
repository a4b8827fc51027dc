"""A run's outputs written as they are made: records, round grids, progress, the summary.

The files and the record schema are those of :mod:`fl_leak.records`.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from statistics import fmean
from typing import Any

from torch import Tensor

from fl_leak.config import RunConfig, as_plain_dict
from fl_leak.fl.interrupts import add_cleanup, remove_cleanup
from fl_leak.records import (
    GRID_FILE,
    RESULTS_FILE,
    SCORES,
    SUMMARY_FILE,
    LeakRecord,
    finite,
    outcome,
)
from fl_leak.report.painter import GridPainter, RoundImages

log = logging.getLogger(__name__)


def _mean(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None and math.isfinite(value)]
    return fmean(present) if present else None


@dataclass(frozen=True)
class Shown:
    """A batch's originals (with their labels) and its reconstructions, matched to them."""

    originals: Tensor
    labels: Tensor
    reconstructions: Tensor


class ResultSink:
    """Writes a run's outputs into ``output_dir`` as they are made, and shows progress.

    ``settings``: the fl-leak run (its rounds, and its configuration for the summary); or None
    with ``rounds`` (None: not known in advance) and ``config`` (what the summary repeats under
    ``config``) given instead. ``class_names`` title the grids' images (labels beyond it by their
    number).
    """

    def __init__(
        self,
        output_dir: Path,
        settings: RunConfig | None,
        class_names: Sequence[str] = (),
        *,
        rounds: int | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.output_dir = output_dir
        self.settings = settings
        self.total_rounds = settings.fl.rounds if settings is not None else rounds
        self.config = as_plain_dict(settings) if settings is not None else dict(config or {})
        self.class_names = tuple(class_names)
        self.records: list[LeakRecord] = []
        self.rounds: dict[int, dict[str, Any]] = {}
        self._images: dict[int, RoundImages] = {}
        self._painter = GridPainter()
        output_dir.mkdir(parents=True, exist_ok=True)
        self.results_path = output_dir / RESULTS_FILE
        self.results_path.write_text("")
        self._lock = threading.Lock()  # records come from the server's thread; a stop from the main
        self._closed = False
        add_cleanup(self._interrupted)

    def _interrupted(self) -> None:
        """Draw the grid of the round under way, close the sink (later records are dropped) and
        summarise what it holds."""
        for server_round in list(self._images):
            self._submit_grid(server_round)
        self.write_summary(status="interrupted")

    def add(self, record: LeakRecord, shown: Shown | None = None) -> None:
        """Append ``record`` to ``results.jsonl`` (flushed); keep its images for the grid.

        After the summary is written (the run ended or was interrupted) records are dropped.
        """
        with self._lock:
            if self._closed:
                return
            with self.results_path.open("a") as handle:
                handle.write(json.dumps(record.as_json(), allow_nan=False) + "\n")
            self.records.append(record)
        if shown is not None:
            images = self._images.setdefault(record.round, RoundImages())
            images.originals.extend(shown.originals)
            images.reconstructions.extend(shown.reconstructions)
            images.titles.extend(
                f"{_source(record)} {self._class_name(int(label))}" for label in shown.labels
            )

    def _class_name(self, label: int) -> str:
        return self.class_names[label] if 0 <= label < len(self.class_names) else str(label)

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
            grid = self._painter.submit(
                self.output_dir / GRID_FILE.format(round=server_round), images
            )
            grid.add_done_callback(partial(self._grid_done, server_round))
        self.rounds.setdefault(server_round, {}).update(
            records=len(records), ok=len(ok), mean_psnr=psnr, **timings
        )
        of_total = f"{server_round}/{self.total_rounds or '?'}"
        if not records:
            log.info("round %s: no update attacked", of_total)
            return
        log.info(
            "round %s: %d/%d updates attacked, %d errors, mean PSNR %s, running mean %s",
            of_total,
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
        """Finish the grids, write ``summary.json``: counts, means, per-round figures, config.

        ``status`` is the outcome of the run (see :func:`fl_leak.records.outcome`), unless
        ``extra`` gives it (``interrupted``). The first summary stands: once written (the run
        ended, or was interrupted while its server went on), later calls change nothing.
        """
        remove_cleanup(self._interrupted)
        path = self.output_dir / SUMMARY_FILE
        with self._lock:
            if self._closed:
                return path
            self._closed = True
        self._painter.finish()
        ok = [record for record in self.records if record.status == "ok"]
        final = self.rounds.get(self.total_rounds or max(self.rounds, default=0), {})
        errors = [record for record in self.records if record.status != "ok"]
        epsilons = [record.epsilon for record in ok if record.epsilon is not None]
        summary = {
            "status": outcome(len(ok), len(errors)),
            "records": len(self.records),
            "ok": len(ok),
            "errors": len(errors),
            "error_messages": _counts(f"{record.stage}: {record.error}" for record in errors),
            "shortfalls": _counts(record.shortfall for record in ok if record.shortfall),
            "max_epsilon": max(epsilons, default=None),
            "mean": {name: _mean([getattr(record, name) for record in ok]) for name in SCORES},
            "test_accuracy": final.get("test_accuracy"),
            "initial_test_accuracy": self.rounds.get(0, {}).get("test_accuracy"),
            "rounds": [{"round": number, **self.rounds[number]} for number in sorted(self.rounds)],
            **extra,
            "config": self.config,
        }
        path.write_text(json.dumps(_strict(summary), indent=2, allow_nan=False) + "\n")
        return path

    def _submit_grid(self, server_round: int) -> None:
        images = self._images.pop(server_round, None)
        if images is not None:
            path = self.output_dir / GRID_FILE.format(round=server_round)
            grid = self._painter.submit(path, images)
            grid.add_done_callback(partial(self._grid_done, server_round))

    def _grid_done(self, server_round: int, grid: Future[float]) -> None:
        if grid.exception() is None:
            self.rounds.setdefault(server_round, {})["grid_seconds"] = grid.result()


def _counts(texts: Iterable[str | None]) -> dict[str, int]:
    """How often each text occurs, the most frequent first."""
    return dict(Counter(text for text in texts if text is not None).most_common())


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
    return finite(value)
