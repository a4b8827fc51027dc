"""``fl-leak``: one Flower simulation in which a malicious server attacks every client update.

fl-leak
fl-leak model=cnn6d fl.num_clients=10 fl.rounds=3 fl.batch_size=4 attack=hybrid
fl-leak --multirun model=cnn2_c1,cnn2_c5 fl.local_steps=1,2,5
fl-leak --help

Writes results.jsonl, summary.json, grid_round_<r>.png and status.json into Hydra's output
directory. In a multirun, a job that fails writes its error into status.json and returns, so the
other jobs go on (``fl-leak-report`` lists it); a single run exits non-zero instead.

Only the configuration is imported before the settings are checked: ``--help``, ``--cfg job`` and
a bad value cost little more than importing torch; Flower, Ray and the attacks load after.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from fl_leak.config import CONF_DIR, CONFIG_NAME, range_problems, register_configs, to_settings
from fl_leak.errors import ConfigError
from fl_leak.records import write_status

log = logging.getLogger("fl_leak")


def _format(value: float | None, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:.3f}{unit}"


@hydra.main(config_path=str(CONF_DIR), config_name=CONFIG_NAME, version_base="1.3")
def _main(cfg: DictConfig) -> None:
    hydra_config = HydraConfig.get()
    output_dir = Path(hydra_config.runtime.output_dir)
    multirun = hydra_config.mode is RunMode.MULTIRUN
    write_status(output_dir, "running")
    try:
        settings = to_settings(cfg)
        problems = range_problems(settings)
        if problems:
            raise ConfigError("invalid settings:\n  " + "\n  ".join(problems))
        from fl_leak.fl.orchestrator import run  # Flower, Ray and the attacks: after the checks

        summary = run(settings, output_dir, multirun=multirun)
    except Exception as error:  # one failed job must not stop the others of a sweep
        write_status(output_dir, "failed", error)
        if isinstance(error, ConfigError):
            print(f"fl-leak: {error}", file=sys.stderr)
        if multirun:
            log.error("job %s failed, the sweep goes on: %s", output_dir, error)
            return
        if isinstance(error, ConfigError):
            sys.exit(2)
        raise
    write_status(output_dir, "ok")
    mean = summary["mean"]
    log.info(
        "%d updates attacked (%d errors): mean PSNR %s, SSIM %s, label accuracy %s; "
        "global test accuracy %s",
        summary["ok"],
        summary["errors"],
        _format(mean["psnr"], " dB"),
        _format(mean["ssim"]),
        _format(mean["label_accuracy"]),
        _format(summary["test_accuracy"]),
    )
    log.info("outputs in %s", output_dir)


def main() -> None:
    """Console entry point."""
    register_configs()
    _main()


if __name__ == "__main__":
    main()
