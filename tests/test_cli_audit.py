"""The ``fl-leak-audit`` command, run as a user runs it."""

from __future__ import annotations

import csv
import re
import subprocess
import sys

import pytest

from fl_leak.config import compose


def _audit(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fl_leak.cli.audit", *overrides],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_audit_prints_table_and_index_per_batch_size(tmp_path):
    output = tmp_path / "audit.csv"
    result = _audit("model=cnn3_c2", "batch_sizes=[1,2]", f"output={output}")
    assert result.returncode == 0, result.stderr
    assert "index (batch size 1, random probe): -1995" in result.stdout
    assert "deficiency per layer against batch size" in result.stdout
    rows = list(csv.DictReader(output.open()))
    # two layers below the last, and the last one (left out of the index)
    assert [(r["batch_size"], r["security_index"]) for r in rows] == [
        ("1", "-1995"),
        ("1", "-1995"),
        ("1", "-1995"),
        ("2", "-4318"),
        ("2", "-4318"),
        ("2", "-4318"),
    ]
    assert [r["deficiency"] for r in rows if r["batch_size"] == "1"] == ["1470", "1050", "0"]
    assert re.search(r"^full\s+False\s+False$", result.stdout, re.MULTILINE)


def test_unknown_model_is_named():
    result = _audit("model=resnet999")
    assert result.returncode != 0
    assert "model/resnet999" in result.stderr and "cnn6d" in result.stderr


@pytest.mark.parametrize(
    "override,named",
    [
        ("batch_sizes=[0]", "batch_sizes=[0] must list batch sizes of at least 1"),
        ("batch_sizes=[]", "batch_sizes=[] must list batch sizes"),
        ("max_dense=-1", "max_dense=-1 must not be negative"),
        ("output=/no/such/folder/audit.csv", "output=/no/such/folder/audit.csv must be a file"),
        ("+max_dens=10", "max_dens"),
    ],
)
def test_bad_settings_are_refused_before_any_work(override, named, tmp_path):
    result = _audit(override)
    assert result.returncode != 0
    assert named in result.stderr
    assert "Traceback" not in result.stderr
    assert "auditing" not in result.stderr


def test_help_lists_its_own_settings_and_fl_leaks_defaults():
    result = _audit("--help")
    assert result.returncode == 0, result.stderr
    defaults = compose()
    assert f"model: {defaults.model}" in result.stdout
    assert f"name: {defaults.data.name}" in result.stdout
    for setting in ("batch_sizes", "max_dense", "rtol", "output", "cnn6d"):
        assert setting in result.stdout
    for foreign in ("attack:", "defense:", "fl:", "experiment", "Configuration groups"):
        assert foreign not in result.stdout


def test_shape_and_classes_come_from_the_data_set_and_precision_is_stated():
    result = _audit("model=cnn2_c0", "max_dense=0", "rtol=0")
    assert result.returncode == 0, result.stderr
    assert "input (3, 32, 32), 12 classes" in result.stdout  # the embedded set
    assert "precision: rank and deficiency assume exact arithmetic" in result.stdout


def test_noise_levels_and_device_are_checked_and_the_prediction_is_printed(capsys):
    """In process: the settings' checks, and the predicted PSNR in the table (batch size 1)."""
    from fl_leak.cli.audit import AuditCommand, _problems, run

    problems = _problems(
        AuditCommand(noise_levels=[1e-3, -1.0], batch_sizes=[2], device="no_such_device")
    )
    assert any("add 1 to batch_sizes" in problem for problem in problems)
    assert any("must be positive" in problem for problem in problems)
    assert any("device must be a torch device" in problem for problem in problems)
    command = AuditCommand(
        model="cnn2_c4", input_shape=[3, 12, 12], num_classes=12, noise_levels=[1e-2]
    )
    (report,) = run(command)
    assert list(report.noise_psnr) == [1e-2]
    assert (
        "predicted PSNR under Gaussian update noise (sigma: PSNR): 0.01:" in capsys.readouterr().out
    )
