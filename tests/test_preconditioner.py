"""The normal-equations preconditioner and the torch CGLS, against dense materialisation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fl_leak
from fl_leak.attacks.linear import preconditioner as preconditioner_module
from fl_leak.attacks.linear.cgls import cgls, frobenius_estimate
from fl_leak.attacks.linear.preconditioner import NormalPreconditioner, kernel_reach
from fl_leak.attacks.linear.solver import SolverOptions, solve_layer
from fl_leak.errors import FlLeakError
from fl_leak.metrics.audit import probe_layers
from tests.conftest import true_gradients

SHAPE = (3, 9, 9)


def _system(conv: nn.Conv2d, activation: nn.Module, batch: int = 1, seed: int = 0, shape=SHAPE):
    """Layer 0's system of ``conv -> activation -> flatten -> linear`` at a seeded probe."""
    torch.manual_seed(seed)
    conv.reset_parameters()  # seeded
    with torch.no_grad():
        out = conv(torch.zeros(1, *shape)).shape[1:]
    model = nn.Sequential(
        conv, activation, nn.Flatten(), nn.Linear(int(torch.tensor(out).prod()), 10)
    )
    return probe_layers(model, shape, batch, seed=seed, scaled=True).systems[0]


CASES = {
    # square, ill-conditioned: 3 -> 3 channels, kernel 3, padding 1 (cnn2_c5's layer)
    "square": lambda: _system(
        nn.Conv2d(3, 3, 3, padding=1, bias=False), nn.Tanh(), shape=(3, 16, 16)
    ),
    # stride 2 with padding (lenet's layer 0); 9 rows in blocks of 4: a padded last block
    "strided": lambda: _system(nn.Conv2d(3, 12, 5, stride=2, padding=2), nn.LeakyReLU(0.2)),
    "dilated": lambda: _system(nn.Conv2d(3, 4, 2, dilation=2, padding=1, bias=False), nn.Tanh()),
    # a batch whose samples have different forward rows (ReLU masks)
    "relu batch": lambda: _system(nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.ReLU(), 2),
    # a batch sharing one forward block
    "tanh batch": lambda: _system(nn.Conv2d(3, 3, 3, padding=1, bias=False), nn.Tanh(), 3),
}


def _normal_matrix(system) -> torch.Tensor:
    matrix = system.dense()
    return matrix.T @ matrix


@pytest.mark.parametrize("case", CASES)
def test_preconditioner_inverts_the_dense_normal_matrix(case):
    system = CASES[case]()
    reach = kernel_reach(system)
    assert reach is not None
    # the identity holds for any delta; a larger one keeps S's rounding out of the comparison
    preconditioner = NormalPreconditioner(system, reach, relative_delta=1e-4)
    normal = _normal_matrix(system)
    shifted = normal + preconditioner.delta * torch.eye(normal.shape[0], dtype=normal.dtype)
    generator = torch.Generator().manual_seed(1)
    u, v = torch.randn(2, system.num_unknowns, generator=generator, dtype=torch.float64)
    # P^-1 (N + delta I) v = v, P^-1 from the factors, N from the materialised matrix
    recovered = preconditioner.apply((shifted @ v).reshape(system.unknown_shape)).reshape(-1)
    assert torch.allclose(recovered, v, rtol=0, atol=1e-9 * float(v.abs().max()))
    # symmetric: <P^-1 u, v> = <u, P^-1 v>
    left = preconditioner.apply(u.reshape(system.unknown_shape)).reshape(-1) @ v
    right = u @ preconditioner.apply(v.reshape(system.unknown_shape)).reshape(-1)
    assert abs(float(left - right)) <= 1e-10 * abs(float(left))


@pytest.mark.parametrize("case", ["relu batch", "strided", "dilated"])
def test_indexed_blocks_match_the_dense_rows(case):
    """``S``'s blocks and ``L`` by indexing the patches, against the materialised ``U``, both
    permuted to the pixel-major block order."""
    system = CASES[case]()
    layout = preconditioner_module._Layout(*system.operator.in_shape, kernel_reach(system)[0])
    matrix = system.dense()
    forward, gradient = matrix[: system.num_forward_rows], matrix[system.num_forward_rows :]
    # pixel-major position of every unknown (b, c, h, w), blocks padded to full size
    order = layout.to_blocks(
        torch.arange(system.num_unknowns, dtype=torch.float64).reshape(system.unknown_shape) + 1
    )  # (B, blocks, size): unknown index + 1, 0 in padding
    diagonal, lower = preconditioner_module._forward_normal_blocks(system, layout)
    columns = preconditioner_module._gradient_columns(system, layout)
    normal = forward.T @ forward
    for b in range(system.batch):
        sample = min(b, diagonal.shape[0] - 1)  # one block shared where the rows are alike
        for i in range(layout.blocks):
            rows = order[b, i].long() - 1
            inside = rows >= 0
            expected = normal[rows[inside]][:, rows[inside]]
            assert torch.allclose(diagonal[sample, i][inside][:, inside], expected, atol=1e-12)
            expected = gradient[:, rows[inside]].T
            assert torch.allclose(columns[b, i][inside], expected, atol=1e-12)
            assert not columns[b, i][~inside].any()
            if i:
                above = order[b, i - 1].long() - 1
                coupling = normal[rows[inside]][:, above[above >= 0]]
                block = lower[sample, i - 1][inside][:, above >= 0]
                assert torch.allclose(block, coupling, atol=1e-12)


def test_frobenius_estimate_is_close_to_the_dense_norm():
    system = CASES["square"]()
    exact = float(system.dense().norm())
    assert abs(frobenius_estimate(system, probes=64) / exact - 1) < 0.1


@pytest.mark.parametrize("case", ["square", "strided", "tanh batch"])
def test_preconditioned_solve_equals_dense_least_squares(case):
    system = CASES[case]()
    assert system.deficiency_bound() == 0
    matrix, rhs = system.dense(), system.rhs()
    dense = torch.linalg.lstsq(matrix, rhs[:, None], driver="gelsd").solution.reshape(-1)
    x, report = solve_layer(system, SolverOptions(tolerance=1e-12))
    assert report.method == "preconditioned CGLS"
    assert report.iterations <= 5
    error = float((x.reshape(-1) - dense).norm() / dense.norm())
    assert error < 1e-9


def test_square_ill_conditioned_layer_needs_a_few_iterations_where_lsmr_needs_hundreds():
    system = CASES["square"]()
    singular = torch.linalg.svdvals(system.dense())
    assert float(singular[0] / singular[-1]) > 50
    _, lsmr = solve_layer(system, SolverOptions(tolerance=1e-12, method="lsmr"))
    _, preconditioned = solve_layer(system, SolverOptions(tolerance=1e-12))
    assert lsmr.iterations >= 100
    assert preconditioned.iterations * 20 <= lsmr.iterations


def test_torch_cgls_equals_scipy_lsmr():
    system = CASES["dilated"]()
    lsmr, lsmr_report = solve_layer(system, SolverOptions(tolerance=1e-13, method="lsmr"))
    assert lsmr_report.method == "LSMR"
    plain = cgls(system, system.rhs(), 1e-13, 20_000)
    assert plain.stop_code in (1, 2)
    assert torch.allclose(plain.solution, lsmr, rtol=0, atol=1e-9 * float(lsmr.abs().max()))
    native, report = solve_layer(system, SolverOptions(tolerance=1e-13, method="cgls"))
    assert report.method == "preconditioned CGLS"
    assert torch.allclose(native, lsmr, rtol=0, atol=1e-9 * float(lsmr.abs().max()))


def test_rank_deficient_layer_keeps_lsmr_minimum_norm():
    # conv 3->2 k3 p1 on 9x9: 162 forward and 54 gradient rows for 243 unknowns
    system = _system(nn.Conv2d(3, 2, 3, padding=1, bias=False), nn.Tanh())
    assert system.deficiency_bound() > 0
    x, report = solve_layer(system, SolverOptions(tolerance=1e-12))
    assert report.method == "LSMR"
    matrix = system.dense()
    minimum_norm = torch.linalg.pinv(matrix) @ system.rhs()
    assert torch.allclose(x.reshape(-1), minimum_norm, atol=1e-8)


def test_linear_attack_reports_the_solver_and_recovers_a_square_layer():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 3, 3, padding=1, bias=False), nn.Tanh(), nn.Flatten(), nn.Linear(243, 10)
    )
    x = torch.rand(1, *SHAPE)
    gradients = true_gradients(model, x, torch.tensor([4]))
    result = fl_leak.reconstruct(model, gradients, input_shape=SHAPE, attack="linear")
    assert result.layers[0].solver == "preconditioned CGLS"
    assert result.layers[0].iterations <= 5
    assert float((result.inputs - x).abs().max()) < 1e-6
    with pytest.raises(FlLeakError, match="method"):
        fl_leak.reconstruct(model, gradients, input_shape=SHAPE, attack="linear", method="qr")


def test_cgls_returns_zero_for_a_zero_rhs():
    system = CASES["strided"]()
    result = cgls(system, torch.zeros(system.shape[0], dtype=torch.float64), 1e-10, 10)
    assert result.iterations == 0 and not result.solution.any()


def test_cgls_checkpoint_abandons_only_a_solve_that_is_not_converging():
    """Unpreconditioned on the square ill-conditioned layer, CGLS is far from done after 2
    iterations: the checkpoint gives up there (what it would reach is hundreds of iterations
    away). Preconditioned by a nearby system's factorisation (more damped than the solve, as a
    reused one is), it converges in a few iterations past the checkpoint, which does not fire."""
    system = CASES["square"]()
    rhs = system.rhs()
    unaided = cgls(system, rhs, 1e-12, 20_000)
    assert unaided.iterations >= 100
    abandoned = cgls(system, rhs, 1e-12, 20_000, checkpoint=(2, 0.3))
    assert (abandoned.iterations, abandoned.stop_code) == (2, 7)
    reach = kernel_reach(system)
    assert reach is not None
    nearby = NormalPreconditioner(system, reach, relative_delta=1e-4)
    free = cgls(system, rhs, 1e-12, 50, nearby.apply)
    checked = cgls(system, rhs, 1e-12, 50, nearby.apply, checkpoint=(2, 0.3))
    assert free.stop_code in (1, 2) and 3 <= free.iterations <= 10
    assert (checked.iterations, checked.stop_code) == (free.iterations, free.stop_code)
    assert torch.equal(checked.solution, free.solution)
