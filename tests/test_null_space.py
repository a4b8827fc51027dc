"""The null-space probe: layers full rank by count of equations but deficient numerically."""

from __future__ import annotations

import gc

import torch
from torch import nn

import fl_leak
from fl_leak.attacks.linear import preconditioner as preconditioner_module
from fl_leak.attacks.linear.solver import (
    SolverOptions,
    null_space_share,
    recovery_share,
    solve_layer,
)
from fl_leak.metrics import psnr
from fl_leak.metrics.audit import probe_layers
from tests.conftest import true_gradients

SHAPE = (3, 10, 10)


def _blind_channel_model() -> nn.Module:
    """conv 3->6 k3 whose filters ignore input channel 2: 384 forward and 162 gradient rows for
    300 unknowns, yet channel 2's 100 pixels meet only the 54 gradient rows that read it."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 6, 3, bias=False)
    with torch.no_grad():
        conv.weight[:, 2] = 0
    return nn.Sequential(conv, nn.Tanh(), nn.Flatten(), nn.Linear(6 * 8 * 8, 10))


def _dense_null_space_share(system) -> tuple[float, int]:
    """The oracle: the probe's component outside the materialised matrix's row space, and rank."""
    matrix = system.dense()
    _, singular_values, vh = torch.linalg.svd(matrix, full_matrices=False)
    rank = int((singular_values > singular_values[0] * 1e-10).sum())
    probe = torch.randn(
        system.unknown_shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    ).reshape(-1)
    row_space = vh[:rank]
    outside = probe - row_space.T @ (row_space @ probe)
    return float(outside.norm() / probe.norm()), system.num_unknowns - rank


def test_share_equals_the_dense_projection_on_a_numerically_deficient_layer():
    system = probe_layers(_blind_channel_model(), SHAPE, scaled=True).systems[0]
    assert system.deficiency_bound() == 0  # counting equations cannot see it
    expected, deficiency = _dense_null_space_share(system)
    assert deficiency >= 46
    share = null_space_share(system, SolverOptions(tolerance=1e-12))
    assert abs(share - expected) <= 1e-6 * expected
    assert share > 0.3


def test_full_rank_layer_has_no_null_space():
    system = probe_layers(fl_leak.build_model("cnn2_c1", seed=0), (3, 32, 32)).systems[0]
    assert null_space_share(system) < 1e-6


def test_hybrid_corrects_a_layer_that_is_deficient_only_numerically(embedded):
    model = _blind_channel_model()
    x, y = embedded[0]
    x, y = x[None, :, :10, :10], torch.tensor([y % 10])
    gradients = true_gradients(model, x, y)
    linear = fl_leak.reconstruct(model, gradients, input_shape=SHAPE, attack="linear")
    hybrid = fl_leak.reconstruct(
        model, gradients, input_shape=SHAPE, attack="hybrid", iterations=300
    )
    assert all(layer.deficiency_bound == 0 for layer in linear.layers)
    assert hybrid.layers[0].corrected
    assert any("layer 0: numerically rank-deficient" in note for note in hybrid.notes)
    scores = [float(psnr(r.inputs.float().clamp(0, 1), x)) for r in (linear, hybrid)]
    assert scores[1] > scores[0] + 1, scores


def test_the_probe_reuses_the_layer_solve_and_certifies_full_rank(monkeypatch):
    """The hybrid's probe of a full-rank layer: solved with the preconditioner the layer's own
    solve built (no second build), to a share far below the threshold; the entry goes with the
    system."""
    system = probe_layers(fl_leak.build_model("cnn2_c1", seed=0), (3, 32, 32)).systems[0]
    _, report = solve_layer(system)
    assert report.method == "preconditioned CGLS"

    def no_second_build(*args, **kwargs):
        raise AssertionError("preconditioner built twice")

    monkeypatch.setattr(preconditioner_module, "NormalPreconditioner", no_second_build)
    share, method = recovery_share(system)
    assert method == "preconditioned CGLS"
    assert share < 1e-6
    key = id(system)
    assert key in preconditioner_module._BUILT
    del system
    gc.collect()
    assert key not in preconditioner_module._BUILT


def test_the_probe_by_the_layer_solve_does_not_certify_a_deficient_layer():
    """On the numerically deficient layer the preconditioned solve leaves the probe unrecovered,
    by at least the minimum-norm share (the null space's own)."""
    system = probe_layers(_blind_channel_model(), SHAPE, scaled=True).systems[0]
    share, method = recovery_share(system, SolverOptions(tolerance=1e-12))
    assert method == "preconditioned CGLS"
    expected, _ = _dense_null_space_share(system)
    assert share >= expected * (1 - 1e-6)
    assert share > 0.3
