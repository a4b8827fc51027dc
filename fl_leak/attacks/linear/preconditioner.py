"""A normal-equations preconditioner for a convolution layer's stacked system.

The system's normal matrix is ``U^T U = A^T F^2 A + K^T K`` (``F`` the forward rows' scaling and
mask). The forward part couples an input pixel only with pixels within the kernel's reach
``r = dilation * (kernel - 1)`` and never across samples, so ordered pixel-major
(row, column, channel) it is block tridiagonal per sample, with blocks of ``r`` image rows. The
gradient part has rank at most the number of gradient rows ``m``. The preconditioner is

    P = A^T F^2 A + delta I + K^T K,

applied exactly: a block-tridiagonal Cholesky factorisation of ``S = A^T F^2 A + delta I`` and the
Woodbury identity ``P^-1 = S^-1 - S^-1 L (I + L^T S^-1 L)^-1 L^T S^-1`` with ``L = K^T``
(``m`` columns). ``delta`` (a small multiple of ``S``'s mean diagonal) only keeps ``S`` definite
where the forward rows leave pixels undetermined; the Woodbury term restores them from the gradient
rows. ``P^-1 U^T U`` is then the identity up to ``delta`` and rounding, and a conjugate-gradient
solve converges in a handful of iterations.

``S`` is assembled by probing: impulses spaced ``2 r + 1`` apart in each image dimension have
disjoint footprints under ``A^T F^2 A``, so one application per (channel, offset) recovers the
entries of ``C (2 r_h + 1) (2 r_w + 1)`` columns at once, for every sample together. Everything
is torch, on the system's device.
"""

from __future__ import annotations

import math
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
# setup beyond this many floating-point operations is left to LSMR. Measured (one thread, side by
# side, benchmarks/bench_solver.py --square-only): cnn2_c5's layer 0 (setup 0.4 GFLOP) solves 8x
# faster than by LSMR at the default tolerance; lenet's (9.5 GFLOP: its 900 gradient rows make the
# Woodbury term dear) took 1.2 s against LSMR's 1.1 s at a similar accuracy, so it stays with LSMR
MAX_SETUP_FLOPS = 5e9
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
    not a plain convolution on the unknown's grid."""
    operator = system.operator
    if not isinstance(operator, Conv2dOperator) or len(operator.in_shape) != 3:
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


def _forward_normal_blocks(
    system: LayerSystem, layout: _Layout, reach: tuple[int, int]
) -> tuple[Tensor, Tensor]:
    """Diagonal and sub-diagonal blocks of ``A^T F^2 A`` per sample (one, shared by all, where
    the samples' forward rows are the same), by impulse probing."""
    shared = _shared_forward_rows(system)
    batch = 1 if shared else system.batch
    channels, height, width = layout.channels, layout.height, layout.width
    period_h, period_w = 2 * reach[0] + 1, 2 * reach[1] + 1
    dtype, device = system.target.dtype, system.target.device
    # one probe image per (channel, row offset, column offset): impulses period apart
    count = channels * period_h * period_w
    impulses = torch.zeros(channels, period_h, period_w, channels, height, width, dtype=dtype)
    for offset_h in range(period_h):
        for offset_w in range(period_w):
            for index in range(channels):
                impulses[index, offset_h, offset_w, index, offset_h::period_h,
                         offset_w::period_w] = 1.0  # fmt: skip
    impulses = impulses.reshape(count, channels, height, width).to(device)
    if shared:  # the samples' blocks are the same: pack distinct probes into the samples
        rounds = math.ceil(count / system.batch)
        packed = impulses.new_zeros(rounds * system.batch, channels, height, width)
        packed[:count] = impulses
        response = system.forward_normal(packed.reshape(rounds, system.batch, *packed.shape[1:]))
        response = response.reshape(-1, channels, height, width)[:count].unsqueeze(0)
    else:  # every probe in every sample
        expanded = impulses[:, None].expand(count, system.batch, channels, height, width)
        response = system.forward_normal(expanded).transpose(0, 1)
    response = response.reshape(batch, channels, period_h, period_w, channels, height, width)
    response = response.permute(0, 1, 2, 3, 5, 6, 4)  # (B, C, Th, Tw, H, W, C')

    def source(offsets: int, size: int) -> Tensor:
        """``[offset, pixel]``: the impulse of that offset whose footprint holds the pixel."""
        offset = torch.arange(offsets, device=device)[:, None]
        pixel = torch.arange(size, device=device)[None, :]
        return offset + offsets * torch.round((pixel - offset) / offsets).long()

    source_h = source(period_h, height)[None, :, None, :, None, None]  # (1, Th, 1, H, 1, 1)
    source_w = source(period_w, width)[None, None, :, None, :, None]  # (1, 1, Tw, 1, W, 1)
    channel = torch.arange(channels, device=device)
    rows = torch.arange(height, device=device)[:, None, None]
    pixel_index = (rows * width + torch.arange(width, device=device)[:, None]) * channels
    row_index = pixel_index + channel  # (H, W, C')
    column_index = (source_h * width + source_w) * channels + channel[
        :, None, None, None, None, None
    ]
    inside = (source_h >= 0) & (source_h < height) & (source_w >= 0) & (source_w < width)
    row_block = (rows // layout.rows_per_block).expand(height, width, channels)
    column_block = source_h.clamp(0, height - 1) // layout.rows_per_block
    shape = (channels, period_h, period_w, height, width, channels)
    row_block = row_block.expand(shape)
    column_block = column_block.expand(shape)
    local_row = (row_index - row_block * layout.block_size).expand(shape)
    local_column = (column_index - column_block * layout.block_size).expand(shape)
    inside = inside.expand(shape)
    # one flat slot per entry in (block, diagonal or lower, row, column); upper-triangle and
    # outside entries go to a discarded slot at the end
    square = layout.block_size**2
    kind = row_block - column_block  # 0: diagonal block, 1: the block below it
    slot = ((row_block * 2 + kind) * layout.block_size + local_row) * layout.block_size
    slot = slot + local_column
    trash = layout.blocks * 2 * square
    slot = torch.where(inside & ((kind == 0) | (kind == 1)), slot, trash)
    band = torch.zeros(batch, trash + 1, dtype=dtype, device=device)
    band.index_copy_(1, slot.reshape(-1), response.reshape(batch, -1))
    band = band[:, :trash].reshape(batch, layout.blocks, 2, layout.block_size, layout.block_size)
    diagonal, lower = band[:, :, 0], band[:, 1:, 1]
    return diagonal, lower


class NormalPreconditioner:
    """``P^-1`` for ``P = A^T F^2 A + delta I + K^T K`` of a convolution layer's system."""

    def __init__(self, system: LayerSystem, reach: tuple[int, int]) -> None:
        channels, height, width = system.operator.in_shape
        self.layout = _Layout(channels, height, width, reach[0])
        diagonal, lower = _forward_normal_blocks(system, self.layout, reach)
        padded = torch.arange(self.layout.block_size, device=diagonal.device)
        padded_rows = self.layout.blocks * self.layout.rows_per_block - height
        samples_unknowns = diagonal.shape[0] * channels * height * width
        mean = diagonal.diagonal(dim1=-2, dim2=-1).sum() / samples_unknowns
        eps = torch.finfo(diagonal.dtype).eps
        self.delta = float(mean) * max(DELTA, 10 * eps)
        diagonal.diagonal(dim1=-2, dim2=-1).add_(self.delta)
        if padded_rows:  # rows appended to fill the last block: identity there
            first = (self.layout.rows_per_block - padded_rows) * width * channels
            last = diagonal[:, -1]
            last[:, padded[first:], padded[first:]] = 1.0
        self._factor(diagonal, lower)
        gradient = system.gradient_block()  # (m, B, C, H, W): the rows of K, scaled
        self.columns = self.layout.to_blocks(gradient.movedim(0, -1))  # (B, blocks, size, m)
        half = self._forward_sweep(self.columns).reshape(-1, system.num_gradient_rows)
        capacity = half.T @ half  # L^T S^-1 L
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
        solved: list[Tensor] = []
        for index, factor in enumerate(self.factors):
            rhs = v[:, index]
            if index:
                rhs = rhs - self.couplings[index - 1] @ solved[-1]
            solved.append(torch.linalg.solve_triangular(factor, rhs, upper=False))
        return torch.stack(solved, dim=1)

    def _backward_loop(self, v: Tensor) -> Tensor:
        solved: list[Tensor] = []
        for index in reversed(range(len(self.factors))):
            rhs = v[:, index]
            if solved:
                rhs = rhs - self.couplings[index].transpose(-1, -2) @ solved[-1]
            factor = self.factors[index].transpose(-1, -2)
            solved.append(torch.linalg.solve_triangular(factor, rhs, upper=True))
        return torch.stack(solved[::-1], dim=1)

    def _solve_forward_part(self, v: Tensor) -> Tensor:
        """``S^-1 v``."""
        return self._backward_sweep(self._forward_sweep(v))

    def apply(self, v: Tensor) -> Tensor:
        """``P^-1 v = S^-1 (v - L (I + L^T S^-1 L)^-1 L^T S^-1 v)``, ``v`` shaped as the
        unknown ``(B, C, H, W)``."""
        blocks = self.layout.to_blocks(v.unsqueeze(-1))
        solved = self._solve_forward_part(blocks)
        flat = self.columns.reshape(-1, self.columns.shape[-1])
        weights = torch.cholesky_solve(flat.T @ solved.reshape(-1, 1), self.capacity)
        corrected = blocks - (flat @ weights).reshape(blocks.shape)
        return self.layout.from_blocks(self._solve_forward_part(corrected)).squeeze(-1)


def normal_preconditioner(
    system: LayerSystem, max_setup_flops: float = MAX_SETUP_FLOPS
) -> NormalPreconditioner | None:
    """The preconditioner of ``system`` where it applies and its setup is within
    ``max_setup_flops`` (and its gradient block within memory bounds), else None."""
    reach = kernel_reach(system)
    if reach is None:
        return None
    if system.num_gradient_rows * system.num_unknowns * system.target.element_size() > (
        MAX_GRADIENT_BLOCK_BYTES
    ):
        return None
    if setup_flops(system, reach) > max_setup_flops:
        return None
    try:
        return NormalPreconditioner(system, reach)
    except torch.linalg.LinAlgError:
        return None


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
