"""fl-leak's configuration: the conf tree, the schema, and the checks before a run starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException

from fl_leak.config import CONF_DIR, Dtype, Partition, RunConfig, compose
from fl_leak.fl import ConfigError, problems, simulate
from fl_leak.models import list_models


def test_every_model_has_a_config_that_selects_it() -> None:
    files = {path.stem for path in (CONF_DIR / "model").glob("*.yaml")}
    assert files == set(list_models())
    assert compose(["model=lenet"]).model == "lenet"


def test_defaults_run_fedsgd_on_the_embedded_data() -> None:
    settings = compose()
    assert settings.data.name == "embedded" and settings.attack.name == "linear"
    assert settings.defense.name == "none" and settings.fl.local_steps == 1
    assert settings.dtype is Dtype.float32 and settings.fl.partition is Partition.iid
    assert problems(settings) == []


def test_groups_and_keys_of_the_issue_compose() -> None:
    settings = compose(
        [
            "model=cnn6d",
            "fl.num_clients=10",
            "fl.rounds=3",
            "fl.batch_size=4",
            "attack=hybrid",
            "data=cifar10",
            "fl.partition=dirichlet",
            "fl.alpha=0.1",
            "seed=3",
            "dtype=float64",
        ]
    )
    assert (settings.model, settings.fl.num_clients, settings.fl.rounds) == ("cnn6d", 10, 3)
    assert (settings.fl.batch_size, settings.attack.name, settings.data.name) == (
        4,
        "hybrid",
        "cifar10",
    )
    assert settings.fl.partition is Partition.dirichlet and settings.dtype is Dtype.float64


def test_a_misspelt_key_fails_naming_it() -> None:
    with pytest.raises(ConfigCompositionException, match=r"fl\.num_clinets"):
        compose(["fl.num_clinets=3"])


def test_a_wrong_type_fails_naming_the_key() -> None:
    with pytest.raises(ConfigCompositionException, match=r"fl\.batch_size"):
        compose(["fl.batch_size=four"])
    with pytest.raises(ConfigCompositionException, match="dtype"):
        compose(["dtype=float16"])


def test_an_unknown_model_group_fails_naming_it() -> None:
    with pytest.raises(MissingConfigException, match="resnet999"):
        compose(["model=resnet999"])


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["fl.batch_size=-2"], "fl.batch_size=-2"),
        (["fl.num_clients=1000"], "fl.num_clients=1000"),
        (["fl.num_clients=64", "fl.batch_size=8"], "fl.batch_size=8"),
        (["fl.lr=0"], "fl.lr=0.0"),
        (["fl.fault.clients=[9]"], "fl.fault.clients=[9]"),
        (["fl.fraction_train=1.5"], "fl.fraction_train=1.5"),
    ],
)
def test_bad_values_are_named(overrides: list[str], named: str) -> None:
    found = problems(compose(overrides))
    assert any(named in problem for problem in found), found


def test_unknown_names_are_named_with_the_known_ones() -> None:
    settings = compose()
    settings.model, settings.attack.name = "resnet999", "nope"
    found = "\n".join(problems(settings))
    assert "model='resnet999' is unknown" in found and "cnn2_c1" in found
    assert "attack='nope' is unknown" in found and "linear" in found


def test_a_bad_setting_stops_before_the_simulation(tmp_path: Path) -> None:
    import ray

    settings: RunConfig = compose(["fl.batch_size=-1"])
    with pytest.raises(ConfigError, match=r"fl\.batch_size=-1"):
        simulate(settings, tmp_path)
    assert not ray.is_initialized()
    assert not (tmp_path / "results.jsonl").exists()


def test_the_command_rejects_a_bad_override_before_starting(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "fl_leak.cli.main",
        "fl.batch_size=-3",
        f"hydra.run.dir={tmp_path}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "fl.batch_size=-3" in result.stderr
    assert not (tmp_path / "results.jsonl").exists()
