"""Each attack's options as a declared dataclass, checked by name and range before any work."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import fl_leak
from fl_leak.attacks import (
    attack_options,
    build_attack_options,
    check_attack_options,
    list_attacks,
)
from fl_leak.attacks.baselines.dlg import DLGOptions
from fl_leak.attacks.baselines.ig import IGOptions
from fl_leak.attacks.correction import CorrectionOptions
from fl_leak.attacks.fedavg.schedule import server_schedule, with_schedule
from fl_leak.attacks.fedavg.trajectory import FedAvgHybridOptions
from fl_leak.attacks.fedavg.unroll import FedAvgUnrollOptions
from fl_leak.attacks.linear.attack import LinearOptions
from fl_leak.attacks.linear.hybrid import HybridOptions
from fl_leak.config import CONF_DIR, compose
from fl_leak.errors import FlLeakError, UnknownAttackError, UnknownOptionError


def test_every_attack_declares_a_dataclass_of_options():
    assert {name: attack_options(name) for name in list_attacks()} == {
        "dlg": DLGOptions,
        "fedavg_hybrid": FedAvgHybridOptions,
        "fedavg_unroll": FedAvgUnrollOptions,
        "hybrid": HybridOptions,
        "ig": IGOptions,
        "linear": LinearOptions,
    }
    schedule = {"local_lr": 0.1}  # the FedAvg attacks need the client's learning rate
    for name in list_attacks():
        options = with_schedule(name, {}, schedule)
        assert dataclasses.is_dataclass(build_attack_options(name, options))


def test_hybrid_takes_the_linear_options_and_the_corrections():
    hybrid = {field.name for field in dataclasses.fields(HybridOptions)}
    linear = {field.name for field in dataclasses.fields(LinearOptions)}
    correction = {field.name for field in dataclasses.fields(CorrectionOptions)}

    assert hybrid == linear | correction | {"correct"}


@pytest.mark.parametrize("path", sorted((CONF_DIR / "attack").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_attack_config_holds_valid_options(path: Path):
    settings = compose([f"attack={path.stem}"])
    options = {"device": "cpu", **settings.attack.options}
    schedule = server_schedule(settings.fl)  # as the run adds it for a FedAvg attack
    check_attack_options(
        settings.attack.name, with_schedule(settings.attack.name, options, schedule)
    )


@pytest.mark.parametrize(
    ("attack", "key", "close"),
    [
        ("linear", "tolerence", "tolerance"),
        ("hybrid", "iteration", "iterations"),
        ("hybrid", "max_iters", "max_iterations"),
        ("ig", "tv_wieght", "tv_weight"),
        ("dlg", "history", "history_size"),
    ],
)
def test_a_misspelt_option_is_named_with_the_valid_ones(attack, key, close):
    with pytest.raises(UnknownOptionError) as caught:
        check_attack_options(attack, {key: 1})

    message = str(caught.value)
    assert message.startswith(f"unknown option {key!r} for attack {attack!r}")
    assert f"did you mean {close!r}?" in message
    for field in dataclasses.fields(attack_options(attack)):
        assert field.name in message.split("its options: ")[1]


def test_an_option_without_a_close_match_lists_the_valid_ones():
    with pytest.raises(UnknownOptionError, match=r"'colour' for attack 'linear'; its options: "):
        check_attack_options("linear", {"colour": "red"})


@pytest.mark.parametrize(
    ("attack", "options", "message"),
    [
        ("linear", {"tolerance": 0}, "tolerance must be a positive number, got 0"),
        ("linear", {"tolerance": -1e-8}, "tolerance must be a positive number"),
        ("linear", {"max_iterations": -5}, "max_iterations must be a positive integer, got -5"),
        ("linear", {"max_iterations": 2.5}, "max_iterations must be a positive integer"),
        ("linear", {"threads": 0}, "threads must be a positive integer or None, got 0"),
        ("linear", {"dtype": "float16"}, "dtype must be one of"),
        ("linear", {"device": "abacus"}, "device must be a torch device, got 'abacus'"),
        ("hybrid", {"correct": "sometimes"}, "correct must be one of .*, got 'sometimes'"),
        ("hybrid", {"iterations": -1}, "iterations must be a non-negative integer, got -1"),
        ("hybrid", {"lr": 0.0}, "lr must be a positive number"),
        ("hybrid", {"tv_weight": -0.1}, "tv_weight must be a non-negative number"),
        ("hybrid", {"input_range": [1, 0]}, "input_range must be \\(low, high\\)"),
        ("hybrid", {"tolerance": 0}, "tolerance must be a positive number"),
        ("ig", {"iterations": -3}, "iterations must be a positive integer"),
        ("dlg", {"history_size": 0}, "history_size must be a positive integer"),
    ],
)
def test_a_value_out_of_range_is_named(attack, options, message):
    with pytest.raises(FlLeakError, match=message):
        check_attack_options(attack, options)


def test_valid_options_pass_and_reach_the_dataclass():
    check_attack_options("hybrid", {"tolerance": 1e-8, "correct": "never", "input_range": [0, 1]})

    built = build_attack_options("linear", {"dtype": "float32", "threads": None})

    assert isinstance(built, LinearOptions)
    assert (built.dtype, built.threads, built.tolerance) == ("float32", None, 1e-10)


def test_an_unknown_attack_is_named():
    with pytest.raises(UnknownAttackError, match="unknown attack 'magic'; known attacks: dlg"):
        check_attack_options("magic", {})


@pytest.mark.parametrize("attack", ["linear", "hybrid", "ig", "dlg"])
def test_reconstruct_refuses_a_bad_option_before_any_work(attack):
    """No model and no gradients: the options are checked first."""
    with pytest.raises(UnknownOptionError, match="unknown option 'bogus'"):
        fl_leak.reconstruct(None, [], attack=attack, bogus=1)  # type: ignore[arg-type]


def test_linear_runs_in_the_dtype_it_is_given():
    torch.manual_seed(0)
    model = fl_leak.build_model("cnn2_c1", input_shape=(3, 8, 8), num_classes=4, seed=0)
    x = torch.rand(1, 3, 8, 8)
    loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([1]))
    gradients = torch.autograd.grad(loss, list(model.parameters()))

    rec = fl_leak.reconstruct(model, gradients, (3, 8, 8), attack="linear", dtype="float32")

    assert rec.inputs.dtype == torch.float32
    assert torch.allclose(rec.inputs, x, atol=1e-3)
