"""``fl-leak``: one Flower simulation in which a malicious server attacks every client update.

fl-leak
fl-leak model=cnn6d fl.num_clients=10 fl.rounds=3 fl.batch_size=4 attack=hybrid
fl-leak --multirun model=cnn2_c1,cnn2_c5 fl.local_steps=1,2,5
fl-leak --help

Writes results.jsonl, summary.json, grid_round_<r>.png and status.json into Hydra's output
directory. Exit codes: 0 when every update was attacked (or some were: status ``partial``, said in
the closing line), 1 when the run failed or every attack failed, 2 for settings that cannot run
(refused before any work, leaving no output folder), 130 when stopped by Ctrl-C or SIGTERM (the
records so far, summary.json and status ``interrupted`` are kept). In a multirun a failed job
writes its status and the sweep goes on (``fl-leak-report`` lists it).

Only the configuration is imported before the settings are checked: ``--help``, ``--cfg job`` and
a bad value cost little more than importing torch; Flower, Ray and the attacks load after.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from fl_leak.config import CONF_DIR, CONFIG_NAME, range_problems, register_configs, to_settings
from fl_leak.errors import ConfigError
from fl_leak.fl.interrupts import stop_on_signals
from fl_leak.models.target import model_name
from fl_leak.records import STATUS_FILE, write_status

log = logging.getLogger("fl_leak")

HYDRA_FILES = (".hydra", STATUS_FILE)  # what a job's folder holds before any work


def _format(value: float | None, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:.3f}{unit}"


def closing_lines(summary: dict[str, Any]) -> list[str]:
    """What the run did, in a few lines: counts and errors, means, privacy, shortfalls."""
    mean, attacked = summary["mean"], summary["records"]
    if not attacked:
        return ["no update reached the server: no client replied (see fl.round_timeout)"]
    counts = f"{summary['ok']} of {attacked} updates attacked"
    if summary["errors"]:
        first = next(iter(summary["error_messages"]))
        counts += f", {summary['errors']} errors (first: {first})"
    lines = [
        f"{counts}: mean PSNR {_format(mean['psnr'], ' dB')}, SSIM {_format(mean['ssim'])}, "
        f"label accuracy {_format(mean['label_accuracy'])}; global test accuracy "
        f"{_format(summary['test_accuracy'])}"
    ]
    if summary.get("max_epsilon") is not None:
        delta = summary["config"]["defense"]["options"].get("delta")
        suffix = "" if delta is None else f" at delta {delta:g}"
        lines.append(f"privacy: epsilon up to {summary['max_epsilon']:.3g}{suffix} (DP-SGD)")
    shortfalls = summary.get("shortfalls") or {}
    if shortfalls:
        config = summary["config"]
        reason, count = next(iter(shortfalls.items()))
        lines.append(
            f"{sum(shortfalls.values())} of {summary['ok']} updates below 60 dB although the audit "
            f"calls {model_name(config['model'])} fully exposed (index 0): {reason}"
            + ("" if count == sum(shortfalls.values()) else " (and other reasons, see records)")
        )
    return lines


class JobLabel(logging.Filter):
    """Starts every log line of a sweep's job with ``[job N]``: parallel jobs share a console."""

    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.__dict__.get("job_labelled"):  # once, whatever the number of handlers
            record.msg = f"{self.label}{record.msg}"
            record.__dict__["job_labelled"] = True
        return True


def remove_job_folder(output_dir: Path) -> None:
    """Remove what Hydra and this command wrote into ``output_dir`` before any work, then the
    folder and its parent if they are left empty (a refused run leaves nothing behind)."""
    for name in HYDRA_FILES:
        path = output_dir / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    for log_file in output_dir.glob("*.log"):
        log_file.unlink(missing_ok=True)
    for folder in (output_dir, output_dir.parent):
        try:
            folder.rmdir()
        except OSError:  # not empty: somebody else's files stay
            return


@hydra.main(config_path=str(CONF_DIR), config_name=CONFIG_NAME, version_base="1.3")
def _main(cfg: DictConfig) -> None:
    hydra_config = HydraConfig.get()
    output_dir = Path(hydra_config.runtime.output_dir)
    multirun = hydra_config.mode is RunMode.MULTIRUN
    label = f"[job {hydra_config.job.num}] " if multirun else ""
    if multirun:
        for handler in logging.getLogger().handlers:
            handler.addFilter(JobLabel(label))
    write_status(output_dir, "running")
    try:
        settings = to_settings(cfg)
        problems = range_problems(settings)
        if problems:
            raise ConfigError("invalid settings:\n  " + "\n  ".join(problems))
        logging.getLogger("alembic").setLevel(logging.WARNING)  # Flower's database, at import
        from fl_leak.fl.orchestrator import run  # Flower, Ray and the attacks: after the checks

        with stop_on_signals(output_dir):
            summary = run(settings, output_dir, multirun=multirun)
    except ConfigError as error:
        print(f"fl-leak: {label}{error}", file=sys.stderr)
        if multirun:
            write_status(output_dir, "failed", error)
            log.error("job %s failed, the sweep goes on: settings that cannot run", output_dir)
            return
        remove_job_folder(output_dir)
        sys.exit(2)
    except Exception as error:  # one failed job must not stop the others of a sweep
        write_status(output_dir, "failed", error)
        log.error(
            "the run failed: %s: %s (traceback in %s)",
            type(error).__name__,
            error,
            output_dir / STATUS_FILE,
        )
        if multirun:
            log.error("job %s failed, the sweep goes on", output_dir)
            return
        sys.exit(1)
    status = summary["status"]
    lines = closing_lines(summary)
    write_status(output_dir, status, reason=None if status == "ok" else lines[0])
    report = log.error if status == "failed" else log.warning if status == "partial" else log.info
    for line in lines:
        report(line)
    log.info("outputs in %s (status %s)", output_dir, status)
    if status == "failed" and not multirun:
        sys.exit(1)


def main() -> None:
    """Console entry point."""
    register_configs()
    _main()


if __name__ == "__main__":
    main()
