"""The ``threads`` setting: every attack and the audit set torch's thread count, then restore it."""

from __future__ import annotations

import importlib

import pytest
import torch
from torch import nn

import fl_leak
from fl_leak.errors import FlLeakError
from fl_leak.threads import DEFAULT_THREADS, torch_threads
from tests.conftest import true_gradients

CALLER = 2  # the caller's thread count: differs from the default, so a change is visible
INPUT_SHAPE = (2, 6, 6)

# Functions each call runs deep inside (module, name) and the call's keyword arguments:
# where the thread count is observed, and where a failure is injected.
CASES = {
    "linear": ([("fl_leak.attacks.linear.walk", "solve_layer")], {}),
    "hybrid": (
        [
            ("fl_leak.attacks.linear.walk", "solve_layer"),
            ("fl_leak.attacks.linear.hybrid", "correct_input"),
        ],
        {"correct": "always", "iterations": 2},
    ),
    "ig": (
        [
            ("fl_leak.attacks.baselines.common", "prepare_problem"),
            ("fl_leak.attacks.baselines.ig", "total_variation"),
        ],
        {"iterations": 2},
    ),
    "dlg": (
        [
            ("fl_leak.attacks.baselines.common", "prepare_problem"),
            ("fl_leak.attacks.baselines.common", "_snapshot"),
        ],
        {"iterations": 2},
    ),
    "audit": (
        [
            ("fl_leak.metrics.audit", "probe_layers"),
            ("fl_leak.metrics.audit", "weak_directions"),
        ],
        {"max_dense": 0},  # the bound path: the numerical count runs a damped LSMR solve
    ),
}


@pytest.fixture(autouse=True)
def caller_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(CALLER)
    yield
    torch.set_num_threads(before)


def _update():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 6 * 6, 4)
    )
    inputs = torch.rand(1, *INPUT_SHAPE)
    return model, true_gradients(model, inputs, torch.tensor([2]))


def _observe(monkeypatch, targets, seen: list[int], fail: bool = False) -> None:
    """Wrap each target to record torch's thread count when it runs (and raise when ``fail``)."""
    for module_name, name in targets:
        module = importlib.import_module(module_name)
        original = getattr(module, name)

        def wrapper(*args, _original=original, **kwargs):
            seen.append(torch.get_num_threads())
            if fail:
                raise RuntimeError("injected failure")
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)


def _call(case: str, **options):
    model, gradients = _update()
    options = {**CASES[case][1], **options}
    if case == "audit":
        return fl_leak.audit(model, INPUT_SHAPE, 1, **options)
    return fl_leak.reconstruct(model, gradients, INPUT_SHAPE, attack=case, **options)


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_whole_call_runs_on_one_thread_by_default_and_the_callers_count_returns(
    case, monkeypatch
):
    seen: list[int] = []
    _observe(monkeypatch, CASES[case][0], seen)

    _call(case)

    assert len(seen) >= len(CASES[case][0])  # every observed function ran
    assert set(seen) == {DEFAULT_THREADS}
    assert torch.get_num_threads() == CALLER


@pytest.mark.parametrize("case", sorted(CASES))
def test_threads_none_leaves_the_callers_count(case, monkeypatch):
    seen: list[int] = []
    _observe(monkeypatch, CASES[case][0], seen)

    _call(case, threads=None)

    assert seen and set(seen) == {CALLER}
    assert torch.get_num_threads() == CALLER


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_callers_count_returns_after_a_failure(case, monkeypatch):
    seen: list[int] = []
    _observe(monkeypatch, CASES[case][0][:1], seen, fail=True)

    with pytest.raises(RuntimeError, match="injected failure"):
        _call(case)

    assert seen == [DEFAULT_THREADS]
    assert torch.get_num_threads() == CALLER


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("threads", [0, -1, 1.5, "2", True])
def test_bad_thread_counts_are_named(case, threads):
    with pytest.raises(FlLeakError, match="threads must be a positive integer or None"):
        _call(case, threads=threads)
    assert torch.get_num_threads() == CALLER


def test_torch_threads_restores_what_the_block_changed():
    with torch_threads(None):
        torch.set_num_threads(3)
    assert torch.get_num_threads() == CALLER
    with pytest.raises(KeyError), torch_threads(1):
        assert torch.get_num_threads() == 1
        raise KeyError("inside")
    assert torch.get_num_threads() == CALLER
