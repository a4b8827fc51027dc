"""A network from the user's own code, chosen by a ``_target_`` YAML in the user's config folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from fl_leak.errors import FlLeakError
from fl_leak.models import build_model, model_name

NETS = """
from torch import nn


def tiny(input_shape, num_classes, width=4):
    channels, height, width_px = input_shape
    return nn.Sequential(
        nn.Conv2d(channels, width, 3, padding=1, bias=False),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(width * height * width_px, num_classes),
    )


def normed(num_classes):
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
        nn.Linear(3600, num_classes),
    )
"""
MODEL_YAML = """# @package _global_
model:
  _target_: my_nets.{function}
  _name_: {name}
"""


@pytest.fixture()
def user_setup(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A module of networks and a config folder naming them, both outside fl-leak."""
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "my_nets.py").write_text(NETS)
    models = tmp_path / "configs" / "model"
    models.mkdir(parents=True)
    (models / "my_tiny.yaml").write_text(MODEL_YAML.format(function="tiny", name="my_tiny"))
    (models / "my_normed.yaml").write_text(MODEL_YAML.format(function="normed", name="normed"))
    pythonpath = os.pathsep.join(
        filter(None, [str(tmp_path / "code"), os.environ.get("PYTHONPATH")])
    )
    return tmp_path / "configs", {**os.environ, "PYTHONPATH": pythonpath}


def _command(module: str, configs: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", module, "--config-dir", str(configs), *overrides]


def test_the_users_network_is_audited_and_attacked(user_setup, tmp_path: Path) -> None:
    configs, environment = user_setup
    run_dir = tmp_path / "run"

    audit = subprocess.run(
        _command("fl_leak.cli.audit", configs, "model=my_tiny"),
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
        cwd=tmp_path,
    )
    run = subprocess.run(
        _command(
            "fl_leak.cli.main",
            configs,
            "model=my_tiny",
            "fl.num_clients=2",
            "fl.rounds=1",
            f"hydra.run.dir={run_dir}",
        ),
        capture_output=True,
        text=True,
        timeout=600,
        env=environment,
        cwd=tmp_path,
    )

    assert audit.returncode == 0, audit.stderr[-3000:]
    assert "my_tiny, input (3, 32, 32), 12 classes" in audit.stdout
    assert "index (batch size 1, random probe): 0" in audit.stdout
    assert run.returncode == 0, run.stderr[-3000:] + run.stdout[-3000:]
    records = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert [(r["model"], r["client"], r["audit_index"]) for r in records] == [
        ("my_tiny", 0, 0),
        ("my_tiny", 1, 0),
    ]
    assert all(record["psnr"] >= 60 for record in records)


def test_an_unsupported_layer_of_the_users_network_is_named_before_the_run(
    user_setup, tmp_path: Path
) -> None:
    configs, environment = user_setup
    result = subprocess.run(
        _command("fl_leak.cli.main", configs, "model=my_normed", f"hydra.run.dir={tmp_path / 'r'}"),
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "attack='linear' cannot attack model='normed'" in result.stderr
    assert "(BatchNorm2d)" in result.stderr and "training mode" in result.stderr
    assert "attack='ig'" in result.stderr


def test_target_mappings_build_seeded_with_the_data_sets_shape() -> None:
    spec = {"_target_": "torch.nn.Linear", "in_features": 4, "out_features": 2}
    first, second = build_model(spec, seed=3), build_model(spec, seed=3)

    assert isinstance(first, nn.Linear)
    assert torch.equal(first.weight, second.weight)
    assert model_name(spec) == "Linear" and model_name("cnn2_c1") == "cnn2_c1"


@pytest.mark.parametrize(
    "spec,named",
    [
        ({"_target_": "no_such_module.net"}, "cannot be imported"),
        ({"_target_": "torch.zeros", "size": [2]}, "returned Tensor, not an nn.Module"),
    ],
)
def test_bad_targets_are_named(spec, named) -> None:
    with pytest.raises(FlLeakError, match=named):
        build_model(spec)
