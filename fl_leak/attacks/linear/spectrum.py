"""Rank, condition and the count of weak singular values of a sparse matrix, exactly and fast.

Three numbers of a matrix ``U`` (``M x N``) with singular values ``s_1 >= s_2 >= ...``:

* the rank at numpy's tolerance: the count of ``s_i > tol = s_1 max(M, N) eps`` (float64);
* the condition ``s_1 / s_rank``;
* the count of ``s_i <= rtol s_1``, plus the ``N - min(M, N)`` directions no row reaches.

All three come from the smaller Gram matrix ``C`` (``U^T U`` or ``U U^T``, ``n = min(M, N)``,
formed from the sparse ``U``) where that decides them, the dense singular values otherwise.
Rounding in ``C`` moves its eigenvalues by about ``eps s_1^2`` times a modest factor, so an
eigenvalue ``s^2`` of ``C`` with ``s >= CERTIFY s_1`` (``CERTIFY = 1e-5``) is off by a relative
``eps / CERTIFY^2`` times that factor (``1e-6`` times it) at most: far from numpy's tolerance and
precise enough for the condition. Below ``CERTIFY s_1`` the Gram matrix cannot tell ``tol`` from
zero; there ``U`` itself decides. Four paths, the first that decides:

1. ``"gram"``, a certificate of full rank: ``s_1^2`` by Lanczos on ``C``, a Cholesky
   factorisation ``C + mu I = L L^T`` (``mu = SHIFT s_1^2``) and ``s_n^2`` by Lanczos on
   ``(C + mu I)^{-1}`` through ``L``, less ``mu``. When
   ``s_n >= CERTIFY s_1`` the matrix has full rank ``n``, and when ``s_n`` is also clearly
   above ``rtol s_1`` the weak count is ``N - n``. Known left null vectors (``dependencies``) are
   deflated first. One inverse step from a random start comes before Lanczos: its Rayleigh
   quotient, a lower bound on the largest eigenvalue of the inverse, already rules out most
   deficient matrices.
2. ``"inertia"``, a deficient matrix without the eigenvalues: ``k``, the number of eigenvalues
   of ``C`` below ``max(rtol^2 (1 + 2 MARGIN), CERTIFY^2) s_1^2``, from the signs of ``D`` in
   ``C - shift I = L D L^T`` (Bunch-Kaufman, Sylvester's law of inertia; ``n^3 / 3`` flops). The
   null space check of path 3 proves those ``k`` below ``tol``, and the condition is
   ``lambda_{k+1}`` by Lanczos on ``(C + mu I)^{-1}`` with the ``k`` vectors projected out (kept
   only where the null space's leak into it is provably below ``LEAK``). Rank ``n - k``, no weak
   value but the ``k``. Where the check fails (weak values between ``tol`` and ``rtol s_1``),
   path 3.
3. ``"eigen"``, the eigenvalues of ``C`` (``torch.linalg.eigvalsh``, values only) with a
   certified null space: the ``k`` eigenvalues below ``CERTIFY^2 s_1^2`` are candidates for zero
   singular values, the others are singular values ``>= CERTIFY s_1`` (rank at least ``n - k``,
   condition and weak count read off them). The candidates' eigenvectors are found by inverse
   iteration on ``C + mu I`` (the certificate's factorisation where it ran, a few block
   solves); for orthonormal ``Y`` spanning them, ``||U^T Y||_2`` (or ``||U Y||_2``), computed
   from the sparse ``U`` with no squaring, bounds the ``k`` smallest singular values from above
   (Courant-Fischer). When it is below ``tol / 2`` those ``k`` values are below ``tol``: rank
   ``n - k`` exactly, as the SVD counts it. Else, or when an eigenvalue lies within ``MARGIN``
   of ``rtol^2 s_1^2``, path 4.
4. ``"svd"``: all singular values of the dense (zero-free) matrix, ``torch.linalg.svdvals``
   (LAPACK's divide and conquer, values only).

Lanczos (the largest eigenvalue of ``C``, of its shifted inverse, of the deflated inverse) checks
its Ritz residual at every step, so an inverse whose top eigenvalue stands apart stops after a
few solves.

Costs for ``n`` unknowns (``n <= M``): the Gram matrix ``8 n^2`` bytes (the forward rows' part
from the layer's own formula where it has one, ``leading``); the certificate ``n^3 / 3`` flops
(Cholesky) plus tens of Lanczos steps; the inertia ``n^3 / 3`` flops; the eigenvalues
``4 n^3 / 3`` flops (half BLAS-2), the null space ``n^3 / 3`` plus ``4 n^2 k`` per iteration; the
SVD ``4 M n^2 - 4 n^3 / 3`` flops (half BLAS-2) and ``8 M n`` bytes.

Dense work runs on ``device`` (torch: Cholesky, eigenvalues, triangular solves, SVD); the sparse
matrix, its products and Lanczos (scipy) stay on the CPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from scipy.linalg import eigh_tridiagonal
from scipy.sparse.linalg import LinearOperator, eigsh
from threadpoolctl import threadpool_limits

from fl_leak.attacks.linear.last_layer import numerical_rank

CERTIFY = 1e-5  # the Gram matrix decides singular values s >= CERTIFY * s_max
MARGIN = 1e-3  # relative distance from rtol * s_max below which the SVD decides the weak count
# Lanczos stops at this relative residual of its Ritz pair; a symmetric matrix's eigenvalue is then
# off by about its square over the relative gap (measured on 7 networks of the family: the
# condition within 2e-9 of the SVD's, against 3e-10 at 1e-10, with a third fewer products)
LANCZOS_TOL = 1e-5
LANCZOS_STEPS = 300  # Lanczos vectors kept before eigsh restarts from the Ritz vector
SHIFT = 1e-11  # inverse iteration on C + SHIFT s_max^2 I (above n eps: C + mu I factors)
NULL_ITERATIONS = 5  # inverse iterations before the null space is given up to the SVD
LEAK = 1e-9  # the null space's largest allowed share of 1 / lambda_{k+1} in the deflated inverse
HEAVY = 1 / 8  # rows touching more than this share of the columns: Gram product dense
EPS = float(np.finfo(np.float64).eps)


@dataclass(frozen=True)
class Spectrum:
    """What the audit reports of one matrix: rank, condition, weak count and how it was found."""

    rank: int
    condition: float
    weak: int  # singular values <= rtol * s_max, plus N - min(M, N)
    method: str  # "gram" (certificate), "inertia", "eigen" (Gram eigenvalues) or "svd"


def from_singular_values(singular: torch.Tensor, shape: tuple[int, int], rtol: float) -> Spectrum:
    """:class:`Spectrum` from descending singular values of a matrix of ``shape`` (those not
    given are zero)."""
    singular = singular.cpu()
    rank = numerical_rank(singular, shape)
    if rank == 0:
        return Spectrum(0, math.inf, shape[1], "svd")
    condition = float(singular[0] / singular[rank - 1])
    weak = int((singular <= rtol * singular[0]).sum()) + shape[1] - singular.numel()
    return Spectrum(rank, condition, weak, "svd")


def _largest_eigenvalue(operator: LinearOperator, size: int) -> float:
    """The largest eigenvalue of a symmetric ``operator``: Lanczos with full reorthogonalisation,
    stopped at the first step whose Ritz pair's residual ``beta_j |e_j^T s|`` is at most
    ``LANCZOS_TOL`` of its value (ARPACK's test, which ``eigsh`` applies only at each restart,
    every ``ncv`` steps); ``eigsh`` from the Ritz vector if ``LANCZOS_STEPS`` do not reach it."""
    vector = np.random.default_rng(0).standard_normal(size)
    vector /= np.linalg.norm(vector)
    basis = np.empty((min(size, LANCZOS_STEPS), size))
    diagonal: list[float] = []
    off_diagonal: list[float] = []
    for step in range(basis.shape[0]):
        basis[step] = vector
        product = operator.matvec(vector)
        diagonal.append(float(product @ vector))
        kept = basis[: step + 1]
        for _ in range(2):  # twice is enough (Kahan)
            product = product - kept.T @ (kept @ product)
        beta = float(np.linalg.norm(product))
        values, vectors = eigh_tridiagonal(np.array(diagonal), np.array(off_diagonal))
        largest = float(values[-1])
        if beta * abs(vectors[-1, -1]) <= LANCZOS_TOL * abs(largest) or step + 1 == size:
            return largest
        off_diagonal.append(beta)
        vector = product / beta
    start = basis.T @ vectors[:, -1]
    values = eigsh(operator, k=1, which="LA", tol=LANCZOS_TOL, v0=start, return_eigenvectors=False)
    return float(values[0])


def _column_spans(rows: sp.csr_matrix) -> list[tuple[int, int, np.ndarray]]:
    """The rows (none empty) grouped by the column ranges they span: ``(start, stop, members)``
    for each connected run of overlapping ranges (a convolution's gradient rows: one run per
    input channel)."""
    rows.sort_indices()
    first = rows.indices[rows.indptr[:-1]]
    last = rows.indices[rows.indptr[1:] - 1]
    order = np.argsort(first, kind="stable")
    spans: list[tuple[int, int, np.ndarray]] = []
    begin, start, stop = 0, int(first[order[0]]), int(last[order[0]]) + 1
    for position in range(1, order.size + 1):
        row = order[position] if position < order.size else None
        if row is not None and first[row] < stop:
            stop = max(stop, int(last[row]) + 1)
            continue
        spans.append((start, stop, order[begin:position]))
        if row is not None:
            begin, start, stop = position, int(first[row]), int(last[row]) + 1
    return spans


def _outer_sum(rows: sp.csr_matrix, device: torch.device) -> torch.Tensor:
    """``rows^T rows``, dense: the sum of each row's outer product with itself, the rows with
    more than ``HEAVY`` of the columns as dense products (BLAS), one per run of overlapping
    column ranges onto its diagonal block, the others as one sparse product."""
    heavy = np.diff(rows.indptr) > HEAVY * rows.shape[1]
    light = rows[~heavy] if heavy.any() else rows
    product = (light.T @ light).tocsr()  # CSR's toarray is row-major: LAPACK factors it faster
    product.sort_indices()  # toarray writes sorted rows several times faster
    gram = torch.from_numpy(product.toarray()).to(device)
    if heavy.any():
        dense_rows = rows[heavy]
        for start, stop, members in _column_spans(dense_rows):
            dense = torch.from_numpy(dense_rows[members][:, start:stop].toarray()).to(device)
            gram[start:stop, start:stop] += dense.T @ dense
    return gram


class _Gram:
    """The smaller Gram matrix of a sparse ``U`` (or the row one), dense on ``device``, with
    ``U``'s other factor for products."""

    def __init__(
        self,
        matrix: sp.csr_matrix,
        rows_first: bool,
        device: torch.device,
        known: Callable[[], tuple[np.ndarray, torch.Tensor] | None] | None = None,
    ) -> None:
        """``known`` (column Gram matrix only): where available, a mask of ``matrix``'s rows and
        their column Gram matrix, dense; the other rows are summed as usual."""
        # C = left @ right, right = left^T; right's columns are C's size
        self.left, self.right = (
            (matrix, matrix.T.tocsr()) if rows_first else (matrix.T.tocsr(), matrix)
        )
        self.size = self.left.shape[0]
        part = None if rows_first or known is None else known()
        if part is None:
            self.dense = _outer_sum(self.right, device)
        else:
            rows, gram = part
            self.dense = _outer_sum(self.right[~rows], device)
            self.dense += gram.to(device)

    def largest(self) -> float:
        """``s_1^2`` by Lanczos on ``C``: through the sparse factors or the dense ``C``,
        whichever product is cheaper."""
        if 2 * self.left.nnz < self.size**2 or self.dense.device.type != "cpu":
            left, right = self.left, self.right

            def matvec(v: np.ndarray) -> np.ndarray:
                return left @ (right @ v)

        else:
            dense = self.dense.numpy()

            def matvec(v: np.ndarray) -> np.ndarray:
                return dense @ v

        operator = LinearOperator((self.size, self.size), matvec=matvec, dtype=np.float64)
        return _largest_eigenvalue(operator, self.size)

    def upper_bound(self, basis: torch.Tensor) -> float:
        """``||U^T Y||_2`` for orthonormal columns ``Y`` of ``C``'s size: at least the largest of
        ``U``'s ``Y.shape[1]`` smallest singular values."""
        product = torch.from_numpy(self.right @ basis.cpu().numpy())
        return math.sqrt(max(float(torch.linalg.eigvalsh(product.T @ product)[-1]), 0.0))


def _cholesky_solve(factor: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """``(L L^T)^{-1} right`` by two triangular solves (``torch.cholesky_solve`` copies ``L``)."""
    half = torch.linalg.solve_triangular(factor, right, upper=False)
    return torch.linalg.solve_triangular(factor.T, half, upper=True)


def _shifted_factor(matrix: torch.Tensor, shift: float) -> torch.Tensor | None:
    """The Cholesky factor of ``matrix + shift I``, or None where it is not positive definite."""
    shifted = matrix.clone()
    shifted.diagonal().add_(shift)
    factor, info = torch.linalg.cholesky_ex(shifted)
    return factor if int(info) == 0 else None


def _gram_certificate(
    gram: _Gram, s_max2: float, rtol: float, dependencies: sp.csc_matrix | None = None
) -> tuple[tuple[int, float] | None, torch.Tensor | None]:
    """``(rank, condition)`` where the Cholesky certificate decides, else None; and, without
    ``dependencies``, the factor of ``C + SHIFT s_1^2 I`` for the null space's inverse iteration.

    The factorisation is of the shifted matrix, ``s_n^2`` its smallest eigenvalue less the shift
    (the shift is a tenth of ``CERTIFY^2 s_1^2``: certified values keep their precision).
    Without ``dependencies`` the Gram matrix must be positive definite: full rank. With them
    (orthogonal columns ``Y``, ``Y^T U = 0``, on the row Gram matrix) ``U U^T`` is deflated to
    ``U U^T + s_1^2 Y Y^T``, whose ``k`` added eigenvalues are ``s_1^2``: positive definite
    certifies rank ``M - k``.
    """
    matrix, known = gram.dense, 0
    if dependencies is not None:
        basis = torch.from_numpy(dependencies.toarray()).to(matrix.device)
        basis /= torch.linalg.vector_norm(basis, dim=0)
        matrix = matrix + s_max2 * (basis @ basis.T)
        known = basis.shape[1]
    shift = SHIFT * s_max2
    factor = _shifted_factor(matrix, shift)
    if factor is None:
        return None, None
    reusable = factor if dependencies is None else None

    def inverse(v: np.ndarray) -> np.ndarray:  # (C + shift I)^{-1} v
        vector = torch.from_numpy(v.reshape(-1, 1)).to(factor.device)
        return _cholesky_solve(factor, vector).cpu().numpy().ravel()

    def fails(ratio: float) -> bool:
        return ratio < CERTIFY or ratio <= rtol * (1 + MARGIN)  # weak values: all counted

    def ratio_from(largest: float) -> float:  # s_n / s_1; at least it from a lower bound
        return math.sqrt(max(1.0 / largest - shift, 0.0) / s_max2)

    size = gram.size
    # a Rayleigh quotient is at most the largest eigenvalue: one inverse step from a random start
    # already shows a null space (its components grow by 1 / shift), before any Lanczos
    start = np.random.default_rng(1).standard_normal(size)
    step = inverse(start)
    if fails(ratio_from(float(step @ inverse(step)) / float(step @ step))):
        return None, reusable
    largest = _largest_eigenvalue(
        LinearOperator((size, size), matvec=inverse, dtype=np.float64), size
    )
    ratio = ratio_from(largest)
    if fails(ratio):
        return None, reusable
    return (size - known, 1.0 / ratio), reusable


def _null_space(
    gram: _Gram, count: int, s_max2: float, bound: float, factor: torch.Tensor | None = None
) -> tuple[torch.Tensor, float] | None:
    """Orthonormal ``Y`` (``count`` columns) with ``||U^T Y||_2 <= bound`` (or ``||U Y||_2``), and
    that norm: inverse iteration on ``C + mu I`` (``factor``, its Cholesky factor, where already
    computed) for the ``count`` smallest eigenvectors, checked on ``U`` itself; None where
    ``NULL_ITERATIONS`` do not reach ``bound``. Then ``count`` singular values are at most it."""
    matrix = gram.dense
    if factor is None:
        factor = _shifted_factor(matrix, SHIFT * s_max2)
    if factor is None:
        return None
    generator = torch.Generator().manual_seed(0)
    basis = torch.randn(gram.size, count, generator=generator, dtype=matrix.dtype)
    basis = basis.to(matrix.device)
    for _ in range(NULL_ITERATIONS):
        basis = torch.linalg.qr(_cholesky_solve(factor, basis)).Q
        reached = gram.upper_bound(basis)
        if reached <= bound:
            return basis, reached
    return None


def _negative_count(matrix: torch.Tensor, shift: float) -> int | None:
    """How many eigenvalues of the symmetric ``matrix`` lie below ``shift``: the negative
    eigenvalues of ``D`` in ``matrix - shift I = P L D L^T P^T`` (Bunch-Kaufman,
    ``torch.linalg.ldl_factor_ex``; Sylvester's law of inertia). None where ``D`` is singular."""
    shifted = matrix.clone()
    shifted.diagonal().sub_(shift)
    factor, pivots, info = torch.linalg.ldl_factor_ex(shifted)
    if int(info) != 0:
        return None
    diagonal = factor.diagonal().cpu().tolist()
    below = factor.diagonal(-1).cpu().tolist()
    two_by_two = (pivots < 0).cpu().tolist()  # a 2x2 block's both rows hold the same negative pivot
    count, row = 0, 0
    while row < len(diagonal):
        if two_by_two[row]:  # the block [[a, b], [b, c]]
            a, b, c = diagonal[row], below[row], diagonal[row + 1]
            determinant = a * c - b * b
            count += 1 if determinant < 0 else (2 if a < 0 else 0)
            row += 2
        else:
            count += diagonal[row] < 0
            row += 1
    return count


def _eigen_spectrum(
    gram: _Gram,
    s_max2: float,
    shape: tuple[int, int],
    rtol: float,
    factor: torch.Tensor | None = None,
) -> Spectrum | None:
    """:class:`Spectrum` from the eigenvalues of ``C`` and a certified null space, or None
    where they cannot decide (module docstring, path 3)."""
    values = torch.linalg.eigvalsh(gram.dense).cpu()  # ascending
    s_max2 = max(s_max2, float(values[-1]))
    s_max = math.sqrt(s_max2)
    tolerance = s_max * max(shape) * EPS
    null = int((values < CERTIFY**2 * s_max2).sum())
    rank = gram.size - null
    if rank == 0 or (rtol > 0 and rtol * s_max < tolerance):
        return None
    relative = values[null:] / s_max2
    if bool(((relative - rtol**2).abs() <= 2 * MARGIN * rtol**2).any()):
        return None
    if null and _null_space(gram, null, s_max2, tolerance / 2, factor) is None:
        return None
    condition = math.sqrt(s_max2 / float(values[null]))
    weak = null + int((relative <= rtol**2).sum()) + shape[1] - gram.size
    return Spectrum(rank, condition, weak, "eigen")


def _inertia_spectrum(
    gram: _Gram,
    s_max2: float,
    shape: tuple[int, int],
    rtol: float,
    factor: torch.Tensor | None = None,
) -> Spectrum | None:
    """:class:`Spectrum` of a deficient matrix without all eigenvalues, or None where this cannot
    decide (module docstring, path 2).

    ``k``, the eigenvalues of ``C`` below ``slice = max(rtol^2 (1 + 2 MARGIN), CERTIFY^2) s_1^2``,
    by inertia; the null space check proves those ``k`` singular values below numpy's tolerance
    and gives ``Y``; every other eigenvalue is at least ``slice``: rank ``n - k``, no weak value
    beyond the ``k``. The condition needs ``lambda_{k+1}``: Lanczos on ``P (C + mu I)^{-1} P``,
    ``P = I - Y Y^T``. Where ``Y`` misses the null space by an angle ``theta``, the null
    eigenvalues ``1 / mu`` leak into that operator by ``sin^2 theta / mu`` at most, and
    ``sin theta <= ||C Y|| / lambda_{k+1} <= s_1 ||U^T Y|| / lambda_{k+1}`` (Davis-Kahan); the
    result is kept when the leak is below ``LEAK`` of ``1 / lambda_{k+1}``."""
    s_max = math.sqrt(s_max2)
    tolerance = s_max * max(shape) * EPS
    if rtol > 0 and rtol * s_max < tolerance:
        return None
    slice_ = max(rtol**2 * (1 + 2 * MARGIN), CERTIFY**2) * s_max2
    null = _negative_count(gram.dense, slice_)
    if not null or null >= gram.size:
        return None
    shift = SHIFT * s_max2
    shifted = factor if factor is not None else _shifted_factor(gram.dense, shift)
    found = None if shifted is None else _null_space(gram, null, s_max2, tolerance / 2, shifted)
    if shifted is None or found is None:
        return None
    basis, reached = found

    def deflated_inverse(v: np.ndarray) -> np.ndarray:  # P (C + mu I)^{-1} P v
        vector = torch.from_numpy(v.reshape(-1, 1)).to(basis.device)
        vector = vector - basis @ (basis.T @ vector)
        vector = _cholesky_solve(shifted, vector)
        return (vector - basis @ (basis.T @ vector)).cpu().numpy().ravel()

    size = gram.size
    operator = LinearOperator((size, size), matvec=deflated_inverse, dtype=np.float64)
    smallest = 1.0 / _largest_eigenvalue(operator, size) - shift  # lambda_{k+1}
    if smallest < slice_ * (1 - MARGIN):  # not what the inertia says: the eigenvalues decide
        return None
    sine = s_max * reached / smallest
    if sine**2 / shift > LEAK / smallest:
        return None
    weak = null + shape[1] - size
    return Spectrum(size - null, math.sqrt(s_max2 / smallest), weak, "inertia")


def _nonzero(matrix: sp.csr_matrix) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """``matrix`` without its zero rows and columns, the rows kept and the columns kept."""
    used_rows = np.flatnonzero(matrix.getnnz(axis=1))
    columns = np.flatnonzero(matrix.getnnz(axis=0))
    if used_rows.size == matrix.shape[0] and columns.size == matrix.shape[1]:
        return matrix, used_rows, columns
    return matrix.tocsc()[:, columns].tocsr()[used_rows], used_rows, columns


def _known_rows(
    leading: tuple[int, Callable[[], torch.Tensor | None]],
    used_rows: np.ndarray,
    columns: np.ndarray,
) -> Callable[[], tuple[np.ndarray, torch.Tensor] | None]:
    """The non-zero part's rows among the leading ones and their column Gram matrix on the
    columns kept, computed when first asked for."""
    count, compute = leading

    def known() -> tuple[np.ndarray, torch.Tensor] | None:
        gram = compute()
        if gram is None:
            return None
        if columns.size != gram.shape[0]:
            kept = torch.from_numpy(columns).to(gram.device)
            gram = gram[kept][:, kept]
        return used_rows < count, gram

    return known


def spectrum(
    matrix: sp.csr_matrix,
    rtol: float,
    rank_bound: int | None = None,
    dependencies: sp.csc_matrix | None = None,
    device: torch.device | str = "cpu",
    leading: tuple[int, Callable[[], torch.Tensor | None]] | None = None,
) -> Spectrum:
    """Rank at numpy's tolerance, condition and weak count of ``matrix`` (module docstring).

    Zero rows and columns are dropped first (each zero column is a zero singular value).
    ``rank_bound``: a structural upper bound on the rank; ``dependencies``: known independent
    left null vectors (columns, disjoint supports), those the bound counts. Below what the
    non-zero part could reach, the certificate is tried with the dependencies deflated when the
    bound leaves them the only ones; the eigenvalues of the smaller Gram matrix next, the SVD
    last. Dense work runs on ``device`` with torch's thread setting; scipy's BLAS (Lanczos,
    sparse products) on one thread. ``leading``: ``(r, compute)``, where ``compute()`` returns
    the column Gram matrix of ``matrix``'s first ``r`` rows (dense, or None), used in place of
    their sparse product (:func:`fl_leak.attacks.linear.matrix.forward_gram`).
    """
    device = torch.device(device)
    shape = matrix.shape
    nonzero, used_rows, columns = _nonzero(matrix)
    known = None if leading is None else _known_rows(leading, used_rows, columns)
    size = min(nonzero.shape)
    if size == 0:
        return Spectrum(0, math.inf, shape[1], "svd")
    deflate = None
    if rank_bound is not None and rank_bound < size and dependencies is not None:
        deflate = dependencies.tocsr()[used_rows].tocsc()
        deflate = deflate[:, np.flatnonzero(deflate.getnnz(axis=0))]
    try_certificate = rank_bound is None or rank_bound >= size
    if not try_certificate and deflate is not None:
        try_certificate = deflate.shape[1] > 0 and rank_bound == nonzero.shape[0] - deflate.shape[1]
    smaller_rows = nonzero.shape[0] < nonzero.shape[1]
    with threadpool_limits(limits=1, user_api="blas"):
        rows_first = smaller_rows or (try_certificate and deflate is not None)
        gram = _Gram(nonzero, rows_first, device, known)
        s_max2 = gram.largest()
        factor = None  # of C + SHIFT s_1^2 I, shared by the certificate and the null space
        if try_certificate and s_max2 > 0:
            certified, factor = _gram_certificate(gram, s_max2, rtol, deflate)
            if certified is not None:
                rank, condition = certified
                return Spectrum(rank, condition, shape[1] - rank, "gram")
        if gram.size != size:  # the row Gram matrix of a tall matrix (deflation): the smaller one
            gram, factor = _Gram(nonzero, smaller_rows, device, known), None
        if s_max2 > 0:
            for path in (_inertia_spectrum, _eigen_spectrum):
                found = path(gram, s_max2, shape, rtol, factor)
                if found is not None:
                    return found
    dense = torch.from_numpy(nonzero.toarray()).to(device)
    return from_singular_values(torch.linalg.svdvals(dense), shape, rtol)
