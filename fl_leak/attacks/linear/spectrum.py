"""Rank, condition and the count of weak singular values of a sparse matrix, exactly and fast.

Three numbers of a matrix ``U`` (``M x N``) with singular values ``s_1 >= s_2 >= ...``:

* the rank at numpy's tolerance: the count of ``s_i > s_1 max(M, N) eps`` (float64);
* the condition ``s_1 / s_rank``;
* the count of ``s_i <= rtol s_1``, plus the ``N - min(M, N)`` directions no row reaches.

:func:`spectrum` first tries a certificate that needs no singular value decomposition. With the
smaller Gram matrix ``C`` (``U^T U`` or ``U U^T``, ``n = min(M, N)``, formed from the sparse
``U``), it computes ``s_1^2`` (Lanczos on ``C``), a Cholesky factorisation ``C = L L^T`` and
``s_n^2`` (Lanczos on ``C^{-1}`` through ``L``). When ``s_n >= CERTIFY s_1`` the matrix has full
rank ``n``: rounding in ``C`` moves its eigenvalues by about ``eps s_1^2`` times a modest factor,
which changes ``s_n`` by a relative ``eps / (2 CERTIFY^2)`` times that factor (``1e-6`` times it),
far from numpy's tolerance (``1e-11 s_1`` and below); and when ``s_n`` is also clearly above
``rtol s_1``, the weak count is ``N - n``. Otherwise -- a failed factorisation, a condition above
``1 / CERTIFY``, ``s_n`` at or near ``rtol s_1`` -- the singular values come from the dense matrix
(``torch.linalg.svdvals``: LAPACK's divide and conquer, values only). Both paths give numpy's rank.

Costs for ``n`` unknowns (``n <= M``): the Gram path ``n^3 / 3`` flops for the factorisation and
``8 n^2`` bytes for ``C``; the SVD ``4 M n^2 - 4 n^3 / 3`` flops (half BLAS-2) and ``8 M n`` bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import LinearOperator, eigsh
from threadpoolctl import threadpool_limits

from fl_leak.attacks.linear.last_layer import numerical_rank

CERTIFY = 1e-5  # the Gram path decides full rank for s_min >= CERTIFY * s_max
MARGIN = 1e-3  # relative distance of s_min from rtol * s_max below which the SVD decides
LANCZOS_TOL = 1e-10


@dataclass(frozen=True)
class Spectrum:
    """What the audit reports of one matrix: rank, condition, weak count and how it was found."""

    rank: int
    condition: float
    weak: int  # singular values <= rtol * s_max, plus N - min(M, N)
    method: str  # "gram" (certified from the Gram matrix) or "svd" (dense singular values)


def from_singular_values(singular: torch.Tensor, shape: tuple[int, int], rtol: float) -> Spectrum:
    """:class:`Spectrum` from descending singular values of a matrix of ``shape`` (those not
    given are zero)."""
    rank = numerical_rank(singular, shape)
    if rank == 0:
        return Spectrum(0, math.inf, shape[1], "svd")
    condition = float(singular[0] / singular[rank - 1])
    weak = int((singular <= rtol * singular[0]).sum()) + shape[1] - singular.numel()
    return Spectrum(rank, condition, weak, "svd")


def _largest_eigenvalue(operator: LinearOperator, size: int) -> float:
    start = np.random.default_rng(0).standard_normal(size)
    values = eigsh(operator, k=1, which="LA", tol=LANCZOS_TOL, v0=start, return_eigenvectors=False)
    return float(values[0])


def _gram_certificate(
    matrix: sp.csr_matrix, rtol: float, dependencies: sp.csc_matrix | None = None
) -> tuple[int, float] | None:
    """``(rank, condition)`` where the Gram matrix certifies the rank, else None.

    Without ``dependencies`` the smaller Gram matrix must be positive definite: full rank. With
    them (orthogonal columns ``Y``, ``Y^T U = 0``) the row Gram matrix ``U U^T`` is deflated to
    ``U U^T + s_1^2 Y Y^T``, whose ``k`` added eigenvalues are ``s_1^2``: positive definite
    certifies rank ``M - k``.
    """
    rows, columns = matrix.shape
    rows_first = rows < columns or dependencies is not None
    left, right = (matrix, matrix.T.tocsr()) if rows_first else (matrix.T.tocsr(), matrix)
    size = left.shape[0]
    s_max2 = _largest_eigenvalue(
        LinearOperator((size, size), matvec=lambda v: left @ (right @ v), dtype=np.float64), size
    )
    if s_max2 <= 0:
        return None
    gram = (left @ right).toarray()
    known = 0
    if dependencies is not None:
        basis = dependencies.toarray()
        basis /= np.linalg.norm(basis, axis=0)
        gram += s_max2 * (basis @ basis.T)
        known = basis.shape[1]
    factor, info = torch.linalg.cholesky_ex(torch.from_numpy(gram))
    if int(info) != 0:
        return None

    def inverse(v: np.ndarray) -> np.ndarray:  # C^{-1} v = L^{-T} L^{-1} v
        vector = torch.from_numpy(v.reshape(-1, 1))
        half = torch.linalg.solve_triangular(factor, vector, upper=False)
        return torch.linalg.solve_triangular(factor.T, half, upper=True).numpy().ravel()

    s_min2 = 1.0 / _largest_eigenvalue(
        LinearOperator((size, size), matvec=inverse, dtype=np.float64), size
    )
    ratio = math.sqrt(max(s_min2, 0.0) / s_max2)
    if ratio < CERTIFY or ratio <= rtol * (1 + MARGIN):  # weak values need every one counted
        return None
    return size - known, 1.0 / ratio


def _nonzero(matrix: sp.csr_matrix) -> tuple[sp.csr_matrix, np.ndarray]:
    """``matrix`` without its zero rows and columns, and the rows kept."""
    used_rows = np.flatnonzero(matrix.getnnz(axis=1))
    columns = np.flatnonzero(matrix.getnnz(axis=0))
    return matrix.tocsc()[:, columns].tocsr()[used_rows], used_rows


def spectrum(
    matrix: sp.csr_matrix,
    rtol: float,
    rank_bound: int | None = None,
    dependencies: sp.csc_matrix | None = None,
) -> Spectrum:
    """Rank at numpy's tolerance, condition and weak count of ``matrix`` (module docstring).

    Zero rows and columns are dropped first (each zero column is a zero singular value).
    ``rank_bound``: a structural upper bound on the rank; ``dependencies``: known independent
    left null vectors (columns, disjoint supports), those the bound counts. Below what the
    non-zero part could reach, the Gram certificate is tried with the dependencies deflated when
    the bound leaves them the only ones, else not at all. Dense work runs on torch's thread
    setting; scipy's BLAS (Lanczos) on one thread.
    """
    shape = matrix.shape
    nonzero, used_rows = _nonzero(matrix)
    size = min(nonzero.shape)
    if size == 0:
        return Spectrum(0, math.inf, shape[1], "svd")
    deflate = None
    if rank_bound is not None and rank_bound < size and dependencies is not None:
        deflate = dependencies.tocsr()[used_rows].tocsc()
        deflate = deflate[:, np.flatnonzero(deflate.getnnz(axis=0))]
    try_gram = rank_bound is None or rank_bound >= size
    if not try_gram and deflate is not None:
        try_gram = deflate.shape[1] > 0 and rank_bound == nonzero.shape[0] - deflate.shape[1]
    if try_gram:
        with threadpool_limits(limits=1, user_api="blas"):
            certified = _gram_certificate(nonzero, rtol, deflate)
        if certified is not None:
            rank, condition = certified
            return Spectrum(rank, condition, shape[1] - rank, "gram")
    singular = torch.linalg.svdvals(torch.from_numpy(nonzero.toarray()))
    return from_singular_values(singular, shape, rtol)
