"""Numerical deficiency: singular values below rtol x the largest, exact and estimated."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fl_leak
from fl_leak.attacks.linear.solver import (
    SolverOptions,
    largest_singular_value,
    solve_layer,
    weak_directions,
)
from fl_leak.metrics.audit import audit, probe_layers
from tests.test_null_space import SHAPE, _blind_channel_model

SMALL_CNN = ("cnn2_c5", (3, 16, 16))


def _system(name: str, shape: tuple[int, ...], batch_size: int = 1):
    model = fl_leak.build_model(name, input_shape=shape, seed=0)
    return probe_layers(model, shape, batch_size, scaled=True).systems[0]


def test_largest_singular_value_equals_the_dense_one():
    system = _system(*SMALL_CNN)
    expected = float(torch.linalg.svdvals(system.dense())[0])
    assert largest_singular_value(system) == pytest.approx(expected, rel=1e-6)


def test_damped_solve_is_the_tikhonov_solution_of_the_dense_matrix():
    system = _system(*SMALL_CNN)
    matrix = system.dense()
    probe = torch.randn(system.num_unknowns, generator=torch.Generator().manual_seed(1))
    probe = probe.double()
    damp = 0.05
    rhs = matrix @ probe
    normal = matrix.T @ matrix + damp**2 * torch.eye(system.num_unknowns, dtype=torch.float64)
    expected = torch.linalg.solve(normal, matrix.T @ rhs)
    solved, _ = solve_layer(system, SolverOptions(tolerance=1e-14), rhs=rhs.reshape(-1), damp=damp)
    assert torch.allclose(solved.reshape(-1), expected, rtol=0, atol=1e-8 * expected.norm())


@pytest.mark.parametrize("rtol", [1e-1, 3e-2, 1e-2])
def test_estimate_matches_the_expectation_from_dense_singular_values(rtol):
    """One draw of ``sum_i f_i^2 z_i^2`` with ``f_i = lambda^2 / (s_i^2 + lambda^2)``."""
    system = _system(*SMALL_CNN)
    singular = torch.linalg.svdvals(system.dense())
    damp = rtol * singular[0]
    filters = damp**2 / (singular**2 + damp**2)
    expected = float((filters**2).sum())
    spread = math.sqrt(2 * float((filters**4).sum()))
    estimate = weak_directions(system, rtol)
    assert abs(estimate - expected) <= 4 * spread + 1, (estimate, expected, spread)
    # soft at the threshold: between the values far below and those not far above it
    assert int((singular <= damp / 3).sum()) - 4 * spread - 1 <= estimate
    assert estimate <= int((singular <= 3 * damp).sum()) + 4 * spread + 1


def test_audit_counts_a_numerical_null_space_the_bound_cannot_see():
    model = _blind_channel_model()
    exact = audit(model, SHAPE)
    estimated = audit(model, SHAPE, max_dense=0)
    dense_count = exact.layers[0].numerical_deficiency
    assert exact.layers[0].method == "svd" and dense_count >= 46
    assert estimated.layers[0].method == "bound" and estimated.layers[0].deficiency == 0
    assert abs(estimated.layers[0].numerical_deficiency - dense_count) <= 4 * math.sqrt(
        2 * dense_count
    )
    assert not exact.full_rank and not estimated.full_rank


def test_full_rank_network_has_no_weak_direction_on_either_path():
    model = fl_leak.build_model(SMALL_CNN[0], input_shape=SMALL_CNN[1], seed=0)
    for max_dense in (6000, 0):
        report = audit(model, SMALL_CNN[1], max_dense=max_dense)
        assert [layer.numerical_deficiency for layer in report.layers] == [0, 0]
        assert report.full_rank


def test_rtol_zero_skips_the_count():
    report = audit(_blind_channel_model(), SHAPE, rtol=0)
    assert all(layer.numerical_deficiency is None for layer in report.layers)
    assert "numerical: singular values" not in report.table()


def _last_layer_gradient(model, batch_size: int, classes: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.rand(batch_size, 3, 16, 16, generator=generator, dtype=torch.float64)
    labels = (
        torch.randperm(classes, generator=generator)[:batch_size]
        if batch_size <= classes
        else torch.randint(classes, (batch_size,), generator=generator)
    )
    model = model.double()
    loss = F.cross_entropy(model(inputs), labels)
    return torch.autograd.grad(loss, list(model.parameters()))[-2]


@pytest.mark.parametrize("batch_size", [1, 3, 6])
def test_last_layer_row_from_the_singular_values_of_its_gradient(batch_size):
    classes = 4
    model = fl_leak.build_model("cnn2_c5", input_shape=(3, 16, 16), num_classes=classes, seed=0)
    report = audit(model, (3, 16, 16), batch_size, max_dense=0, rtol=0.05)
    last = report.layers[-1]
    features = [m for m in model.modules() if isinstance(m, nn.Linear)][-1].in_features
    singular = torch.linalg.svdvals(_last_layer_gradient(model, batch_size, classes))
    rank = min(batch_size, classes)
    assert last.unknowns == batch_size * features and last.forward_equations == 0
    assert last.deficiency == (batch_size - rank) * features
    assert last.condition == pytest.approx(float(singular[0] / singular[rank - 1]), rel=1e-9)
    strong = int((singular[:batch_size] > 0.05 * singular[0]).sum())
    assert last.numerical_deficiency == (batch_size - strong) * features
    recoverable = last.deficiency == 0 and last.numerical_deficiency == 0
    assert recoverable == (batch_size <= classes and strong == batch_size)
    if batch_size > classes:
        assert report.index == 0 and last.deficiency > 0  # the paper's index leaves it out


def _leaky_model_with_one_unit_at(value: float, slope: float) -> tuple[nn.Module, torch.Tensor]:
    """conv 3->4 k3 on 3x8x8, one output unit of channel 0 moved to ``value`` by its bias."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3).double()
    inputs = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1)).double()
    with torch.no_grad():
        conv.bias[0] -= conv(inputs)[0, 0, 2, 3] - value
    model = nn.Sequential(conv, nn.LeakyReLU(slope), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    return model.double(), inputs


@pytest.mark.parametrize("slope", [0.01, 0.0])
def test_units_at_the_kink_are_counted_and_deny_full_rank(slope):
    model, inputs = _leaky_model_with_one_unit_at(1e-9, slope)
    outputs = model[1](model[0](inputs)).detach().abs()
    expected = outputs <= 1e-7 * outputs.max()
    if slope == 0:
        expected &= outputs > 0
    report = audit(model, (3, 8, 8), inputs=inputs, labels=torch.tensor([2]))
    assert report.layers[0].near_kink == int(expected.sum()) >= 1
    assert not report.full_rank
    labels = torch.tensor([2])
    skipped = audit(model, (3, 8, 8), inputs=inputs, labels=labels, kink_tol=0)
    assert skipped.layers[0].near_kink == 0
    assert audit(model, (3, 8, 8)).layers[0].near_kink == 0  # a random probe counts none


def test_a_unit_away_from_the_kink_is_not_counted():
    model, inputs = _leaky_model_with_one_unit_at(0.5, 0.01)
    report = audit(model, (3, 8, 8), inputs=inputs, labels=torch.tensor([2]))
    assert report.layers[0].near_kink == 0


def test_the_attack_notes_reconstructed_outputs_at_the_kink():
    model, inputs = _leaky_model_with_one_unit_at(1e-9, 0.01)
    labels = torch.tensor([2])
    gradients = torch.autograd.grad(
        F.cross_entropy(model(inputs), labels), list(model.parameters())
    )
    noted = fl_leak.reconstruct(model, gradients, input_shape=(3, 8, 8), attack="linear")
    assert any("of the kink" in note for note in noted.notes), noted.notes
    model, inputs = _leaky_model_with_one_unit_at(0.5, 0.01)
    gradients = torch.autograd.grad(
        F.cross_entropy(model(inputs), labels), list(model.parameters())
    )
    clean = fl_leak.reconstruct(model, gradients, input_shape=(3, 8, 8), attack="linear")
    assert not any("of the kink" in note for note in clean.notes)
