"""A normal-equations preconditioner for a convolution layer's stacked system.

The system's normal matrix is ``U^T U = A^T F^2 A + K^T K`` (``F`` the forward rows' scaling and
mask). The forward part couples an input pixel only with pixels within the kernel's reach
``r = dilation * (kernel - 1)`` and never across samples, so ordered pixel-major
(row, column, channel) it is block tridiagonal per sample, with blocks of ``r`` image rows. The
gradient part has rank at most the number of gradient rows ``m``. The preconditioner is

    P = A^T F^2 A + delta I + K^T K,

applied exactly: a block-tridiagonal Cholesky factorisation ``S = L_S L_S^T`` of
``S = A^T F^2 A + delta I`` and, with ``L = K^T`` (``m`` columns) and ``H = L_S^-1 L``,
``P = L_S (I + H H^T) L_S^T``, inverted by the Woodbury identity
``(I + H H^T)^-1 = I - H (I + H^T H)^-1 H^T``: one forward and one backward block sweep per
application. ``delta`` (a small multiple of ``S``'s mean diagonal) only keeps ``S`` definite
where the forward rows leave pixels undetermined; the Woodbury term restores them from the
gradient rows. ``P^-1 U^T U`` is then the identity up to ``delta`` and rounding, and a
conjugate-gradient solve converges in a handful of iterations.

``S`` and ``L`` are assembled by indexing the convolution's patches (its ``patch_index``): each
output position adds its patch's ``Q x Q`` Gram matrix of the scaled weights to ``S``, and each
gradient row holds output gradients at its weight entry's pixels. Everything is torch, on the
system's device.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from fl_leak.attacks.linear.cgls import CglsResult, cgls
from fl_leak.attacks.linear.layers.conv2d import Conv2dOperator
from fl_leak.attacks.linear.system import LayerSystem

# delta relative to the forward normal matrix's mean diagonal: small against the systems' smallest
# eigenvalues that matter, large enough that S's condition (<= 1 / DELTA) keeps the Woodbury
# term's cancellation small
DELTA = 1e-8
# setup beyond this many floating-point operations is left to LSMR. Measured (side by side,
# benchmarks/bench_solver.py --square-only, load 12-14): cnn2_c5's layer 0 (setup 0.4 GFLOP) and
# lenet's (9.5 GFLOP: its 900 gradient rows make the Woodbury term dear) solve to the dense
# solve's accuracy 39x and 13x faster than it on one thread, 46x and 10x on two
MAX_SETUP_FLOPS = 1e10
# the gradient block L = K^T, materialised, may take at most this many bytes
MAX_GRADIENT_BLOCK_BYTES = 2**28


@dataclass(frozen=True)
class _Layout:
    """Pixel-major block layout of one sample's unknowns ``(C, H, W)``."""

    channels: int
    height: int
    width: int
    rows_per_block: int  # image rows per diagonal block (the vertical reach)

    @property
    def blocks(self) -> int:
        return math.ceil(self.height / self.rows_per_block)

    @property
    def block_size(self) -> int:
        return self.rows_per_block * self.width * self.channels

    def to_blocks(self, x: Tensor) -> Tensor:
        """``(B, C, H, W, *k)`` to ``(B, blocks, block_size, *k)``, zero rows appended."""
        extra = x.shape[4:]
        padded_height = self.blocks * self.rows_per_block
        x = x.movedim(1, 3)  # (B, H, W, C, *k)
        if padded_height > self.height:
            pad = x.new_zeros(x.shape[0], padded_height - self.height, *x.shape[2:])
            x = torch.cat([x, pad], dim=1)
        return x.reshape(x.shape[0], self.blocks, self.block_size, *extra)

    def from_blocks(self, y: Tensor) -> Tensor:
        """The inverse of :meth:`to_blocks`."""
        extra = y.shape[3:]
        padded_height = self.blocks * self.rows_per_block
        y = y.reshape(y.shape[0], padded_height, self.width, self.channels, *extra)
        return y[:, : self.height].movedim(3, 1)


def kernel_reach(system: LayerSystem) -> tuple[int, int] | None:
    """How far (rows, columns) the forward normal matrix couples pixels; None when the layer is
    not a plain (one-group) convolution on the unknown's grid."""
    operator = system.operator
    if not isinstance(operator, Conv2dOperator) or len(operator.in_shape) != 3:
        return None
    if operator.groups != 1:
        return None
    kernel_h, kernel_w = operator.weight.shape[2:]
    return (
        max(1, operator.dilation[0] * (kernel_h - 1)),
        max(1, operator.dilation[1] * (kernel_w - 1)),
    )


def setup_flops(system: LayerSystem, reach: tuple[int, int]) -> float:
    """Floating-point operations to build the preconditioner (factorisation, Woodbury terms)."""
    channels, height, width = system.operator.in_shape
    layout = _Layout(channels, height, width, reach[0])
    block, blocks = layout.block_size, layout.blocks
    rank = system.num_gradient_rows
    samples = 1 if _shared_forward_rows(system) else system.batch
    factor = samples * blocks * (7 / 3) * block**3
    woodbury = system.batch * blocks * 3 * block**2 * rank + 2 * rank**2 * system.num_unknowns
    return float(factor + woodbury + rank**3 / 3)


def _shared_forward_rows(system: LayerSystem) -> bool:
    """Whether every sample has the same forward rows (then ``A^T F^2 A`` is one block, shared)."""
    return bool((system.valid == system.valid[:1]).all())


def _pixel_major_patches(system: LayerSystem) -> Tensor:
    """The convolution's patches (``unfold`` of the input positions, ``(Q, L)``) as pixel-major
    positions ``(row * W + column) * C + channel`` of one sample; -1 where a patch meets
    padding."""
    channels, height, width = system.operator.in_shape
    index = system.operator.patch_index()
    assert index is not None  # kernel_reach admits only convolutions with one group
    index = index.to(system.target.device)
    pixel = (index % (height * width)) * channels + index // (height * width)
    return torch.where(index >= 0, pixel, -1)


# band slots by layer geometry (_band_slots): every update of a round, every round, shares them
_SLOTS: dict[tuple[object, ...], Tensor] = {}
MAX_CACHED_GEOMETRIES = 8


def _band_slots(system: LayerSystem, layout: _Layout) -> Tensor:
    """For each entry ``(l, q, p)`` of the patches' stacked ``Q x Q`` Gram matrices, its flat
    position in the band of diagonal and sub-diagonal blocks ``(blocks, 2, size, size)``; entries
    in the upper blocks or at padding go to a discarded slot at the end. Depends on the layer's
    geometry only, so it is kept for the next system of the same geometry."""
    operator = system.operator
    assert isinstance(operator, Conv2dOperator)
    key = (
        operator.in_shape,
        tuple(operator.weight.shape[2:]),
        operator.stride,
        operator.padding,
        operator.dilation,
        layout.rows_per_block,
        str(system.target.device),
    )
    if key in _SLOTS:
        return _SLOTS[key]
    pixel = _pixel_major_patches(system).T  # (L, Q)
    row, column = pixel[:, :, None], pixel[:, None, :]
    size = layout.block_size
    row_block, column_block = row // size, column // size
    kind = row_block - column_block  # 0: diagonal block, 1: the block below it
    slot = ((row_block * 2 + kind) * size + row % size) * size + column % size
    keep = (row >= 0) & (column >= 0) & ((kind == 0) | (kind == 1))
    slot = torch.where(keep, slot, layout.blocks * 2 * size**2).reshape(-1)
    if len(_SLOTS) >= MAX_CACHED_GEOMETRIES:
        _SLOTS.pop(next(iter(_SLOTS)))
    _SLOTS[key] = slot
    return slot


def _forward_normal_blocks(system: LayerSystem, layout: _Layout) -> tuple[Tensor, Tensor]:
    """Diagonal and sub-diagonal blocks of ``A^T F^2 A`` per sample (one, shared by all, where
    the samples' forward rows are the same), by indexing.

    Output position ``l`` of the convolution reads the patch ``idx[:, l]`` through the rows
    ``F_l W`` (``W`` the ``(O, Q)`` weight), so ``A^T F^2 A = sum_l P_l^T W^T F_l^2 W P_l``:
    each position's ``Q x Q`` Gram matrix added at its patch's pairs of pixels."""
    batch = 1 if _shared_forward_rows(system) else system.batch
    channels = system.operator.out_channels
    weight = system.operator.weight.reshape(channels, -1)
    scale = torch.broadcast_to(system.forward_scale, system.target.shape)[:batch]
    squares = scale.reshape(batch, channels, -1).square()
    gram = torch.einsum("oq,bol,op->blqp", weight, squares, weight)  # (B, L, Q, Q)
    trash = layout.blocks * 2 * layout.block_size**2
    band = gram.new_zeros(batch, trash + 1)
    band.index_add_(1, _band_slots(system, layout), gram.reshape(batch, -1))
    band = band[:, :trash].reshape(batch, layout.blocks, 2, layout.block_size, layout.block_size)
    return band[:, :, 0], band[:, 1:, 1]


def _gradient_columns(system: LayerSystem, layout: _Layout) -> Tensor:
    """``L = K^T``, the scaled gradient rows of ``U`` as columns ``(B, blocks, size, m)``, by
    indexing: row ``(o, q)`` holds ``g_o D[b, o, l]`` at sample ``b``'s pixel ``idx[q, l]``."""
    channels, batch = system.operator.out_channels, system.batch
    pixel = _pixel_major_patches(system)  # (Q, L)
    patches = pixel.shape[0]
    rows = system.num_gradient_rows
    d = system.output_gradient.reshape(batch, channels, 1, -1)
    values = d * system.gradient_scale.reshape(1, channels, 1, 1)  # (B, O, 1, L)
    values = values.expand(batch, channels, patches, pixel.shape[1])
    row = torch.arange(rows, device=pixel.device).reshape(channels, patches, 1)
    target = torch.where(pixel >= 0, pixel * rows + row, layout.blocks * layout.block_size * rows)
    columns = values.new_zeros(batch, layout.blocks * layout.block_size * rows + 1)
    columns.index_add_(1, target.reshape(-1), values.reshape(batch, -1))
    return columns[:, :-1].reshape(batch, layout.blocks, layout.block_size, rows)


class NormalPreconditioner:
    """``P^-1`` for ``P = A^T F^2 A + delta I + K^T K`` of a convolution layer's system.

    ``delta`` is ``relative_delta`` times the mean diagonal of ``A^T F^2 A`` (at least ``10 eps``
    times it): ``DELTA`` for the least-squares solve's preconditioner, where ``P`` is then
    ``U^T U`` up to rounding; a larger value makes ``P`` the exact normal matrix of a Tikhonov
    problem (:func:`~fl_leak.attacks.linear.noise.solve_tikhonov`).
    """

    def __init__(
        self, system: LayerSystem, reach: tuple[int, int], relative_delta: float = DELTA
    ) -> None:
        channels, height, width = system.operator.in_shape
        self.layout = _Layout(channels, height, width, reach[0])
        diagonal, lower = _forward_normal_blocks(system, self.layout)
        padded = torch.arange(self.layout.block_size, device=diagonal.device)
        padded_rows = self.layout.blocks * self.layout.rows_per_block - height
        samples_unknowns = diagonal.shape[0] * channels * height * width
        mean = diagonal.diagonal(dim1=-2, dim2=-1).sum() / samples_unknowns
        eps = torch.finfo(diagonal.dtype).eps
        self.mean_diagonal = float(mean)
        self.delta = self.mean_diagonal * max(relative_delta, 10 * eps)
        diagonal.diagonal(dim1=-2, dim2=-1).add_(self.delta)
        if padded_rows:  # rows appended to fill the last block: identity there
            first = (self.layout.rows_per_block - padded_rows) * width * channels
            last = diagonal[:, -1]
            last[:, padded[first:], padded[first:]] = 1.0
        self._factor(diagonal, lower)
        # H = L_S^-1 L (S = L_S L_S^T): P = L_S (I + H H^T) L_S^T
        half = self._forward_sweep(_gradient_columns(system, self.layout))
        self.half = half.reshape(-1, system.num_gradient_rows)
        capacity = self.half.T @ self.half  # L^T S^-1 L
        capacity.diagonal().add_(1.0)
        self.capacity, info = torch.linalg.cholesky_ex(capacity)
        if int(info) != 0:
            raise torch.linalg.LinAlgError("capacitance matrix not positive definite")

    def _factor(self, diagonal: Tensor, lower: Tensor) -> None:
        """Block-tridiagonal Cholesky: ``S = L L^T`` with blocks ``L_ii`` and ``L_{i+1,i}``."""
        factors: list[Tensor] = []
        couplings: list[Tensor] = []
        for index in range(self.layout.blocks):
            block = diagonal[:, index]
            if index:
                coupling = couplings[-1]
                block = block - coupling @ coupling.transpose(-1, -2)
            factor, info = torch.linalg.cholesky_ex(block)
            if int(info.max()) != 0:
                raise torch.linalg.LinAlgError("forward normal matrix not positive definite")
            factors.append(factor)
            if index + 1 < self.layout.blocks:
                # L_{i+1,i} = S_{i+1,i} L_ii^-T
                couplings.append(
                    torch.linalg.solve_triangular(
                        factor.transpose(-1, -2), lower[:, index], upper=True, left=False
                    )
                )
        self.factors = factors
        self.couplings = couplings

    def _shared(self, sweep: Callable[[Tensor], Tensor], v: Tensor) -> Tensor:
        """``sweep(v)``; with one factor shared by all samples, the samples become columns (one
        triangular solve with ``B k`` columns instead of ``B`` broadcast ones)."""
        batch, blocks, size, columns = v.shape
        if self.factors[0].shape[0] != 1 or batch == 1:
            return sweep(v)
        folded = v.permute(1, 2, 0, 3).reshape(1, blocks, size, batch * columns)
        return sweep(folded).reshape(blocks, size, batch, columns).permute(2, 0, 1, 3)

    def _forward_sweep(self, v: Tensor) -> Tensor:
        """``L_S^-1 v`` (``S = L_S L_S^T``) for ``v`` of shape ``(B, blocks, size, k)``."""
        return self._shared(self._forward_loop, v)

    def _backward_sweep(self, v: Tensor) -> Tensor:
        """``L_S^-T v``, the other half of ``S^-1``."""
        return self._shared(self._backward_loop, v)

    def _forward_loop(self, v: Tensor) -> Tensor:
        solved = torch.empty_like(v)
        for index, factor in enumerate(self.factors):
            rhs = v[:, index]
            if index:  # v_i - L_{i,i-1} y_{i-1}
                rhs = torch.baddbmm(rhs, self.couplings[index - 1], solved[:, index - 1], alpha=-1)
            torch.linalg.solve_triangular(factor, rhs, upper=False, out=solved[:, index])
        return solved

    def _backward_loop(self, v: Tensor) -> Tensor:
        solved = torch.empty_like(v)
        for index in reversed(range(len(self.factors))):
            rhs = v[:, index]
            if index + 1 < len(self.factors):  # v_i - L_{i+1,i}^T y_{i+1}
                coupling = self.couplings[index].transpose(-1, -2)
                rhs = torch.baddbmm(rhs, coupling, solved[:, index + 1], alpha=-1)
            factor = self.factors[index].transpose(-1, -2)
            torch.linalg.solve_triangular(factor, rhs, upper=True, out=solved[:, index])
        return solved

    def apply(self, v: Tensor) -> Tensor:
        """``P^-1 v = L_S^-T (w - H (I + H^T H)^-1 H^T w)`` with ``w = L_S^-1 v`` (Woodbury on
        ``I + H H^T``), ``v`` shaped as the unknown ``(B, C, H, W)``."""
        solved = self._forward_sweep(self.layout.to_blocks(v.unsqueeze(-1)))
        flat = solved.reshape(-1, 1)
        weights = torch.cholesky_solve(self.half.T @ flat, self.capacity)
        corrected = (flat - self.half @ weights).reshape(solved.shape)
        return self.layout.from_blocks(self._backward_sweep(corrected)).squeeze(-1)


# preconditioners built, by the identity of their (live) system: the walk's solve and the hybrid
# attack's null-space probe of the same system share one; an entry goes with its system
_BUILT: dict[int, NormalPreconditioner | None] = {}


def applicable_reach(
    system: LayerSystem, max_setup_flops: float = MAX_SETUP_FLOPS
) -> tuple[int, int] | None:
    """The kernel reach of ``system`` (:func:`kernel_reach`) where the preconditioner applies,
    its setup is within ``max_setup_flops`` and its gradient block within memory bounds, else
    None."""
    reach = kernel_reach(system)
    if reach is None:
        return None
    if system.num_gradient_rows * system.num_unknowns * system.target.element_size() > (
        MAX_GRADIENT_BLOCK_BYTES
    ):
        return None
    if setup_flops(system, reach) > max_setup_flops:
        return None
    return reach


def normal_preconditioner(
    system: LayerSystem, max_setup_flops: float = MAX_SETUP_FLOPS
) -> NormalPreconditioner | None:
    """The preconditioner of ``system`` where it applies (:func:`applicable_reach`), else None.
    Built once per system object: later calls for the same system return the same
    preconditioner."""
    reach = applicable_reach(system, max_setup_flops)
    if reach is None:
        return None
    key = id(system)
    if key not in _BUILT:
        try:
            _BUILT[key] = NormalPreconditioner(system, reach)
        except torch.linalg.LinAlgError:
            _BUILT[key] = None
        weakref.finalize(system, _BUILT.pop, key, None)
    return _BUILT[key]


@dataclass
class TorchSolve:
    """A solve by :func:`~fl_leak.attacks.linear.cgls.cgls` and the method that did it."""

    result: CglsResult
    method: str  # "preconditioned CGLS" or "CGLS"


def torch_solve(
    system: LayerSystem,
    rhs: Tensor,
    tolerance: float,
    max_iterations: int,
    require_preconditioner: bool,
) -> TorchSolve | None:
    """CGLS on the system's device, preconditioned by :class:`NormalPreconditioner` where that
    applies (a structurally full-rank convolution system, setup within bounds).

    With ``require_preconditioner`` (the automatic choice) a system without the preconditioner,
    whose preconditioner's setup exceeds ``MAX_SETUP_FLOPS``, or not in float64 (CGLS runs in the
    system's dtype; LSMR's vector updates in float64) gets None (the caller then uses
    LSMR); otherwise the setup is not bounded and a system without the preconditioner gets plain
    CGLS. A rank-deficient system is never
    preconditioned: preconditioned iterates leave the row space of ``U``, and the solution would
    not be the minimum-norm one.
    """
    if require_preconditioner and system.target.dtype != torch.float64:
        return None  # LSMR's vector updates run in float64 whatever the walk's dtype
    limit = MAX_SETUP_FLOPS if require_preconditioner else math.inf
    full_rank = system.deficiency_bound() == 0
    preconditioner = normal_preconditioner(system, limit) if full_rank else None
    if preconditioner is None and require_preconditioner:
        return None
    apply = preconditioner.apply if preconditioner is not None else None
    result = cgls(system, rhs, tolerance, max_iterations, apply)
    return TorchSolve(result, "preconditioned CGLS" if preconditioner else "CGLS")
