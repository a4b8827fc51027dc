"""A data set from the user's own code: a Dataset factory named by ``_target_``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fl_leak.config import DataConfig
from fl_leak.data.target import DataTargetError
from fl_leak.fl.local_data import load_split

CODE = """
import torch
from torch.utils.data import TensorDataset


def stripes(train, size=12, side=16):
    generator = torch.Generator().manual_seed(0 if train else 1)
    images = torch.rand(size, 1, side, side, generator=generator)
    labels = torch.arange(size) % 3
    return TensorDataset(images, labels)
"""


def test_a_factory_split_is_read_as_8_bit_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my_data.py").write_text(CODE)
    monkeypatch.syspath_prepend(str(tmp_path))
    data = DataConfig(name="stripes", factory={"_target_": "my_data.stripes", "size": 6})

    train, test = load_split(data, train=True), load_split(data, train=False)

    expected = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    assert train.images.dtype == torch.uint8 and train.info.input_shape == (1, 16, 16)
    assert torch.equal(train.images, (expected * 255).round().to(torch.uint8))
    assert not torch.equal(train.images, test.images)  # the factory saw train=False
    assert train.labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert train.info.class_names == ("0", "1", "2") and train.info.name == "stripes"


def test_a_bad_factory_is_named() -> None:
    data = DataConfig(name="x", factory={"_target_": "no_such_package.make"})
    with pytest.raises(DataTargetError, match="cannot be imported"):
        load_split(data, train=True)


@pytest.mark.slow  # the loading is checked above; the run's mechanics by tests/test_own_model.py
def test_the_users_data_set_is_attacked_end_to_end(tmp_path: Path) -> None:
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "my_data.py").write_text(CODE)
    (tmp_path / "configs" / "data").mkdir(parents=True)
    (tmp_path / "configs" / "data" / "stripes.yaml").write_text(
        "name: stripes\nfactory:\n  _target_: my_data.stripes\n  size: 12\n"
    )
    environment = {**os.environ, "PYTHONPATH": str(tmp_path / "code")}
    run_dir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "fl_leak.cli.main",
        "--config-dir",
        str(tmp_path / "configs"),
        "data=stripes",
        "fl.num_clients=2",
        "fl.rounds=1",
        "audit.max_dense=0",
        f"hydra.run.dir={run_dir}",
    ]

    result = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env=environment, cwd=tmp_path
    )

    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    records = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert [(r["data"], r["client"], r["status"]) for r in records] == [
        ("stripes", 0, "ok"),
        ("stripes", 1, "ok"),
    ]
    assert all(record["psnr"] >= 60 for record in records)  # on 1x16x16 images
