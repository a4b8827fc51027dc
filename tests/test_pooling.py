"""Max pooling in the linear attack and the audit: the selection adapter, the pooled system, the
position search, the chain's placement rules."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fl_leak
from fl_leak.attacks import check_attack_model
from fl_leak.attacks.linear.attack import LinearOptions, run_walk
from fl_leak.attacks.linear.chain import parse_chain
from fl_leak.attacks.linear.layers import selection_for
from fl_leak.attacks.linear.pooling import pooled_system
from fl_leak.errors import UnsupportedLayerError
from fl_leak.metrics import psnr
from fl_leak.metrics.audit import audit, probe_layers
from tests.conftest import true_gradients

POOLS = [
    ("2", lambda: nn.MaxPool2d(2), (3, 6, 6)),
    ("3 s2 p1 (overlapping)", lambda: nn.MaxPool2d(3, stride=2, padding=1), (2, 7, 7)),
    ("2 dilated ceil", lambda: nn.MaxPool2d(2, stride=2, dilation=2, ceil_mode=True), (2, 9, 9)),
]


@pytest.mark.parametrize("name,factory,in_shape", POOLS, ids=[p[0] for p in POOLS])
def test_select_and_scatter_are_adjoint(name, factory, in_shape):
    generator = torch.Generator().manual_seed(0)
    pool = selection_for(factory(), in_shape)
    z = torch.randn(3, *in_shape, generator=generator, dtype=torch.float64)
    positions = pool.positions(z)
    x = torch.randn(3, *in_shape, generator=generator, dtype=torch.float64)
    y = torch.randn(3, *pool.out_shape, generator=generator, dtype=torch.float64)
    lhs = (pool.select(x, positions) * y).sum()
    rhs = (x * pool.scatter(y, positions)).sum()
    assert torch.isclose(lhs, rhs, rtol=1e-12)


@pytest.mark.parametrize("name,factory,in_shape", POOLS, ids=[p[0] for p in POOLS])
def test_selection_at_its_own_maxima_is_the_pooling_and_scatter_its_gradient(
    name, factory, in_shape
):
    generator = torch.Generator().manual_seed(1)
    module = factory()
    pool = selection_for(module, in_shape)
    z = torch.randn(2, *in_shape, generator=generator, dtype=torch.float64, requires_grad=True)
    positions = pool.positions(z.detach())
    assert torch.equal(pool.select(z.detach(), positions), module(z).detach())
    upstream = torch.randn(2, *pool.out_shape, generator=generator, dtype=torch.float64)
    (autograd,) = torch.autograd.grad(module(z), z, upstream)
    assert torch.allclose(pool.scatter(upstream, positions), autograd, atol=1e-14)


def _tiny(in_channels=1, size=4, channels=16, classes=5, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(channels * (size // 2) ** 2, classes),
    ).double()


def _data(shape, label=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(1, *shape, generator=generator, dtype=torch.float64), torch.tensor([label])


def test_pooled_system_at_the_true_positions_solves_to_the_input():
    """Dense-matrix oracle: the system built at autograd's positions has the input as its unique
    least-squares solution, and its output gradient is autograd's."""
    model = _tiny(size=6, channels=8)
    x, y = _data((1, 6, 6))
    chain = parse_chain(model, true_gradients(model, x, y), (1, 6, 6))
    block = chain.blocks[0]
    z = model[0](x).detach().requires_grad_(True)
    F.cross_entropy(model[2:](model[1](z)), y).backward()
    positions = F.max_pool2d(z.detach(), 2, return_indices=True)[1]
    pooled = block.output(z.detach())
    pooled_gradient = z.grad.flatten(2).gather(2, positions.flatten(2)).reshape(pooled.shape)
    system = pooled_system(block, positions, block.activation.inverse(pooled), pooled_gradient)

    assert torch.allclose(system.output_gradient, z.grad, atol=1e-15)
    dense = system.dense()
    assert torch.linalg.matrix_rank(dense) == x.numel()
    solution = torch.linalg.lstsq(dense, system.rhs()[:, None]).solution
    assert torch.allclose(solution.reshape(x.shape), x, atol=1e-10)


def test_linear_attack_is_exact_on_a_tiny_full_rank_maxpool_network():
    model = _tiny()
    x, y = _data((1, 4, 4))
    assert fl_leak.audit(model, (1, 4, 4), inputs=x, labels=y).full_rank

    rec = fl_leak.reconstruct(model, true_gradients(model, x, y), (1, 4, 4), attack="linear")

    layer = rec.layers[0]
    assert (rec.inputs - x).norm() / x.norm() < 1e-7
    assert layer.pool_windows == int((F.max_pool2d(F.relu(model[0](x)), 2) > 0).sum())
    assert layer.pool_consistent == layer.pool_windows
    assert not any("max pooling" in note for note in rec.notes)


def test_a_false_fixed_point_is_reported_and_the_hybrid_anchors_above_it():
    """From the first start alone the positions reproduce themselves yet leave a residual: the
    diagnostics and notes say so, and the hybrid does not trust that layer's system."""
    model = _tiny()
    x, y = _data((1, 4, 4))
    gradients = true_gradients(model, x, y)
    rec = fl_leak.reconstruct(model, gradients, (1, 4, 4), attack="linear", pool_restarts=0)
    layer = rec.layers[0]
    assert (rec.inputs - x).norm() / x.norm() > 1e-3
    assert layer.pool_consistent == layer.pool_windows and layer.residual > 1e-6
    assert any("positions not settled" in note for note in rec.notes)
    hybrid = fl_leak.reconstruct(
        model, gradients, (1, 4, 4), attack="hybrid", pool_restarts=0, iterations=5
    )
    assert hybrid.layers[0].corrected
    assert "correction started from the middle of the input range" in hybrid.notes


def test_pooling_before_the_activation_is_the_same_block():
    after = _tiny()
    before = nn.Sequential(after[0], after[2], after[1], after[3], after[4])
    x, y = _data((1, 4, 4))
    rec = fl_leak.reconstruct(before, true_gradients(before, x, y), (1, 4, 4), attack="linear")
    assert (rec.inputs - x).norm() / x.norm() < 1e-7


def test_audit_counts_the_rows_at_the_probe_positions():
    model = _tiny(in_channels=2, size=8, channels=8)
    x, y = _data((2, 8, 8))
    report = audit(model, (2, 8, 8), inputs=x, labels=y)
    active = int((F.max_pool2d(F.relu(model[0](x)), 2) > 0).sum())
    assert report.layers[0].forward_equations == active
    assert report.layers[0].unknowns == 128
    random = audit(model, (2, 8, 8))
    probe = torch.rand(1, 2, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert random.layers[0].forward_equations == int(
        (F.max_pool2d(F.relu(model[0](probe)), 2) > 0).sum()
    )


MISPLACED = [
    ([nn.MaxPool2d(2), nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2, 3)], "0", "input"),
    (
        [nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.MaxPool2d(1), nn.Flatten(), nn.Linear(8, 3)],
        "2",
        "another pooling",
    ),
    (
        [nn.Conv2d(1, 2, 3), nn.ReLU(), nn.AvgPool2d(1), nn.MaxPool2d(2), nn.Flatten(),
         nn.Linear(8, 3)],
        "3",
        "a linear map",
    ),
]  # fmt: skip


@pytest.mark.parametrize("layers,path,reason", MISPLACED, ids=["input", "twice", "after a map"])
def test_misplaced_pooling_is_refused_by_name_before_any_work(layers, path, reason):
    model = nn.Sequential(*layers)
    with pytest.raises(UnsupportedLayerError, match=rf"layer '{path}' \(MaxPool2d\).*{reason}"):
        check_attack_model("linear", model, (1, 6, 6))


def test_flower_cnn_is_accepted_by_the_linear_attacks():
    model = fl_leak.build_model("flower_cnn", seed=0)
    for attack in ("linear", "hybrid"):
        check_attack_model(attack, model, (3, 32, 32))


@pytest.mark.slow  # about 3 minutes: the audit's dense SVDs and 1,000 correction steps
def test_flower_cnn_at_batch_1_audit_rows_and_hybrid_above_ig_figure(embedded):
    """Flower's quickstart network on embedded image 37 (benchmarks/flower_cnn_table.py): its
    first conv is deficient at batch 1, every layer above full rank at the data; the positions of
    layer 1 do not settle, and the hybrid beats ig's 13.4 dB of the baselines study."""
    model = fl_leak.build_model("flower_cnn", num_classes=12, seed=0).double()
    x = embedded.images[[37]].double() / 255
    y = embedded.labels[[37]]
    report = audit(model, (3, 32, 32), inputs=x, labels=y)
    assert report.layers[0].deficiency > 0
    assert [layer.deficiency for layer in report.layers[1:]] == [0, 0, 0, 0]

    rec = fl_leak.reconstruct(model, true_gradients(model, x, y), attack="hybrid")

    assert rec.layers[1].pool_consistent < rec.layers[1].pool_windows
    assert float(psnr(rec.inputs.double().clamp(0, 1), x)) > 13.4  # peak 1


def _flower_table():
    path = Path(__file__).parents[1] / "benchmarks" / "flower_cnn_table.py"
    spec = importlib.util.spec_from_file_location("flower_cnn_table", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("restarts,exact", [(3, True), (0, False)], ids=["settled", "false"])
def test_layer_recovery_against_the_true_layer_inputs(restarts, exact):
    """The benchmark's per-layer check: the walk's layer input against autograd's, and its
    maxima against the entries where autograd's pre-activation gradient is non-zero."""
    table = _flower_table()
    model = _tiny()
    x, y = _data((1, 4, 4))
    gradients = true_gradients(model, x, y)
    options = LinearOptions(pool_restarts=restarts)
    _, walked, _, _ = run_walk(model, gradients, (1, 4, 4), 1, None, options)
    truth = probe_layers(model, (1, 4, 4), 1, inputs=x, labels=y)

    (row,) = table.layer_recovery(walked, truth)

    z = model[0](x).detach().requires_grad_(True)
    F.cross_entropy(model[2:](model[1](z)), y).backward()
    assert row.windows == int((z.grad != 0).sum())
    assert abs(row.error - float((walked.inputs[0] - x).norm() / x.norm())) < 1e-12
    if exact:
        assert row.error < 1e-7 and row.placed == row.windows
    else:
        assert row.error > 1e-3 and row.placed < row.windows
