"""The audit's sparse layer matrix, its known row dependencies, and the certified spectrum."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import nn

import fl_leak
from fl_leak.attacks.linear.matrix import forward_gram, left_null_vectors, system_matrix
from fl_leak.attacks.linear.spectrum import _negative_count, _outer_sum, spectrum
from fl_leak.metrics.audit import probe_layers
from tests.test_audit import SMALL, _materialised

SHAPE = (2, 8, 8)
STRIDED = nn.Sequential(  # stride, padding and dilation differing per axis
    nn.Conv2d(2, 3, 3, stride=(2, 1), padding=(1, 2), dilation=(2, 1), bias=False),
    nn.Tanh(),
    nn.Flatten(),
    nn.Linear(3 * 3 * 10, 4),
)


def _systems(model: nn.Module, batch_size: int):
    torch.manual_seed(0)
    return probe_layers(model.double(), SHAPE, batch_size, scaled=True).systems


@pytest.mark.parametrize("model", [*SMALL, STRIDED])
def test_sparse_matrix_equals_the_autograd_materialisation(model):
    """Indexed (convolutions) and product-built (average pooling folded in) alike: the unscaled
    oracle from plain autograd, once the rows carry the system's scales."""
    for system in _systems(model, batch_size=2):
        built = system_matrix(system).toarray()
        scales = torch.cat(
            [
                torch.broadcast_to(system.forward_scale, system.target.shape).reshape(-1),
                torch.broadcast_to(system.gradient_scale, system.observed_gradient.shape).reshape(
                    -1
                ),
            ]
        ).numpy()
        oracle = _materialised(system)  # forward rows masked, not scaled
        expected = np.where(scales[:, None] != 0, oracle * scales[:, None], 0.0)
        assert built.shape == expected.shape
        assert np.allclose(built, expected, rtol=0, atol=1e-12 * np.abs(expected).max())


def test_known_dependencies_are_left_null_vectors():
    model = fl_leak.build_model("cnn3_c1", input_shape=(3, 12, 12), seed=0).double()
    for system in probe_layers(model, (3, 12, 12), 2, scaled=True).systems:
        dense = system.dense().numpy()
        dependencies = left_null_vectors(system).toarray()
        assert dependencies.shape[1] == system.operator.out_channels
        assert np.abs(dependencies.T @ dense).max() < 1e-12 * np.abs(dependencies).max()


def _numpy(matrix: np.ndarray, rtol: float) -> tuple[int, float, int]:
    singular = np.linalg.svd(matrix, compute_uv=False)
    rank = np.linalg.matrix_rank(matrix)
    weak = int((singular <= rtol * singular[0]).sum()) + matrix.shape[1] - singular.size
    return rank, singular[0] / singular[rank - 1], weak


@pytest.mark.parametrize(
    ("rows", "columns", "zero_columns", "decay", "rank", "path"),
    [
        (60, 40, 0, 1.0, 40, "gram"),  # tall, well conditioned: certified
        (30, 50, 0, 1.0, 30, "gram"),  # wide
        (60, 40, 5, 1.0, 40, "gram"),  # zero columns dropped, the rest certified
        (60, 40, 0, 1.0, 31, "inertia"),  # deficient: null count by inertia, checked on U
        (30, 50, 0, 1e-2, 22, "inertia"),  # wide and deficient
        (60, 40, 0, 3e-5, 40, "eigen"),  # weak values: not null as inertia counts them; eigenvalues
        (60, 40, 0, 1e-9, 40, "svd"),  # too ill-conditioned to certify: dense singular values
        (60, 40, 0, 1e-6, 40, "svd"),  # values between 1e-6 and 1e-5: the SVD counts them
    ],
)
def test_spectrum_equals_numpy(rows, columns, zero_columns, decay, rank, path):
    generator = np.random.default_rng(1)
    left = np.linalg.qr(generator.standard_normal((rows, rows)))[0]
    right = np.linalg.qr(generator.standard_normal((columns, columns)))[0]
    size = min(rows, columns)
    values = np.geomspace(1.0, decay, size)
    values[rank:] = 0.0
    matrix = left[:, :size] @ np.diag(values) @ right[:size]
    matrix[:, :zero_columns] = 0.0
    result = spectrum(sp.csr_matrix(matrix), rtol=1e-4)
    expected_rank, condition, weak = _numpy(matrix, 1e-4)
    assert (result.rank, result.weak, result.method) == (expected_rank, weak, path)
    assert result.condition == pytest.approx(condition, rel=1e-6)


def test_deflated_dependencies_certify_a_deficient_wide_layer():
    """cnn2_c4 (one filter): 127 rows, one known dependency, rank 126 of 432 unknowns."""
    model = fl_leak.build_model("cnn2_c4", input_shape=(3, 12, 12), seed=0)
    (system,) = probe_layers(model, (3, 12, 12), 1, scaled=True).systems
    matrix = system_matrix(system)
    bound = system.num_unknowns - system.deficiency_bound()
    result = spectrum(matrix, 1e-4, bound, left_null_vectors(system))
    rank, condition, weak = _numpy(matrix.toarray(), 1e-4)
    assert (result.method, result.rank, result.weak) == ("gram", rank, weak)
    assert result.condition == pytest.approx(condition, rel=1e-6)
    without = spectrum(matrix, 1e-4, bound)  # without them: the inertia decides
    assert (without.method, without.rank, without.weak) == ("inertia", rank, weak)
    assert without.condition == pytest.approx(condition, rel=1e-6)


def test_negative_count_is_the_number_of_eigenvalues_below_the_shift():
    """Indefinite matrices, where Bunch-Kaufman takes 2x2 pivots: the count equals numpy's."""
    generator = np.random.default_rng(3)
    for size in (5, 40, 200):
        for _ in range(5):
            half = generator.standard_normal((size, size))
            matrix = torch.from_numpy(half + half.T)
            values = np.linalg.eigvalsh(matrix.numpy())
            shift = float(generator.uniform(values[0], values[-1]))
            assert _negative_count(matrix, shift) == int((values < shift).sum())


@pytest.mark.parametrize("model", [*SMALL, STRIDED])
def test_forward_gram_equals_the_sparse_product(model):
    """Stride, padding and dilation differing per axis, two samples: the formula against the
    forward rows' product formed from the sparse matrix."""
    for system in _systems(model, batch_size=2):
        gram = forward_gram(system)
        if gram is None:
            continue
        rows = system_matrix(system)[: system.num_forward_rows]
        expected = (rows.T @ rows).toarray()
        assert np.allclose(gram.numpy(), expected, rtol=0, atol=1e-12 * np.abs(expected).max())


def test_gram_matrix_equals_the_sparse_product():
    """Heavy rows in separate, in overlapping and in the same column ranges, light rows among
    them: the Gram matrix against scipy's product."""
    generator = np.random.default_rng(4)
    blocks = []
    for start, stop in [(0, 30), (30, 60), (50, 80), (10, 20), (90, 120)]:
        block = np.zeros((6, 120))
        block[:, start:stop] = generator.standard_normal((6, stop - start))
        blocks.append(block)
    light = np.where(generator.random((20, 120)) < 0.05, generator.standard_normal((20, 120)), 0)
    matrix = sp.csr_matrix(np.vstack([*blocks, light])[generator.permutation(50)])
    gram = _outer_sum(matrix, torch.device("cpu")).numpy()
    expected = (matrix.T @ matrix).toarray()
    assert np.allclose(gram, expected, rtol=0, atol=1e-12 * np.abs(expected).max())
