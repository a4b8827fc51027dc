"""The ``fl-leak-audit`` command, run as a user runs it."""

from __future__ import annotations

import csv
import re
import subprocess
import sys


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
