"""A layer system's matrix ``U`` (:class:`~fl_leak.attacks.linear.system.LayerSystem`) as a
sparse matrix.

Rows and columns are ordered as :meth:`LayerSystem.apply` orders them: forward rows ``(b, out)``
then gradient rows (weight-shaped), unknowns ``(b, in)``.

A layer of the form ``z[o, l] = sum_q W[o, q] x[idx[q, l]]`` (convolutions, fully connected
layers: the operator's ``patch_index``) gives ``U`` by indexing alone: forward row ``(b, o, l)``
holds ``W[o, q]`` at unknown ``(b, idx[q, l])``, gradient row ``(o, q)`` holds ``D[b, o, l]``
there; ``2 B C_out Q L`` entries, built in milliseconds. Another layer's ``U`` comes from products
with unit vectors, its two blocks apart:

* forward: a sample's rows depend on that sample's input only, so one sample's matrix ``A_1`` is
  the operator applied to an identity batch (``forward`` on the ``n_in`` unit inputs, or
  ``forward_adjoint`` on the ``n_out`` unit outputs, whichever is fewer), and sample ``b``'s block
  is ``A_1`` with its rows scaled (channel equilibration, masked rows zero);
* gradient: ``K_D^T`` applied to the unit weight-shaped vectors gives one row of ``K_D`` over all
  samples per call (vectorised with ``torch.func.vmap``), or ``K_D`` applied to the unit inputs
  one column per call, whichever is fewer.

Dense pieces are at most ``max_entries`` entries at a time and are kept sparse once computed, so
a tall system (a layer of 128 channels has 73,728 gradient rows) never exists densely.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from fl_leak.attacks.linear.spectrum import Spectrum, spectrum

if TYPE_CHECKING:
    from fl_leak.attacks.linear.system import LayerSystem

MAX_ENTRIES = 1 << 23  # entries of one dense piece (64 MiB in float64)


def _sparse_rows(
    unit_rows: Callable[[Tensor], Tensor], count: int, width: int, like: Tensor, max_entries: int
) -> sp.csr_matrix:
    """Stack ``unit_rows(eye[i:j])`` (one row of ``width`` per unit vector) for ``i < count``."""
    chunk = max(1, max_entries // max(width, 1))
    pieces = []
    for start in range(0, count, chunk):
        stop = min(start + chunk, count)
        eye = like.new_zeros(stop - start, count)
        eye[:, start:stop].fill_diagonal_(1.0)
        rows = unit_rows(eye).reshape(stop - start, width)
        pieces.append(sp.csr_matrix(rows.detach().cpu().numpy()))
    return sp.vstack(pieces, format="csr") if pieces else sp.csr_matrix((0, width))


def _forward_block(system: LayerSystem, max_entries: int) -> sp.csr_matrix:
    """The scaled forward rows: one sample's ``A_1`` repeated block-diagonally, rows scaled."""
    operator, like = system.operator, system.target
    n_in, n_out = math.prod(operator.in_shape), math.prod(operator.out_shape)
    if n_in <= n_out:  # columns A_1 e_j, transposed
        single = _sparse_rows(
            lambda eye: operator.forward(eye.reshape(-1, *operator.in_shape)),
            n_in,
            n_out,
            like,
            max_entries,
        ).T.tocsr()
    else:  # rows A_1^T e_i
        single = _sparse_rows(
            lambda eye: operator.forward_adjoint(eye.reshape(-1, *operator.out_shape)),
            n_out,
            n_in,
            like,
            max_entries,
        )
    scale = system.forward_scale.reshape(system.batch, n_out).detach().cpu().numpy()
    return sp.block_diag([sp.diags(row) @ single for row in scale], format="csr")


def _gradient_block(system: LayerSystem, max_entries: int) -> sp.csr_matrix:
    """The scaled gradient rows ``K_D`` over all samples' unknowns."""
    operator, d = system.operator, system.output_gradient
    rows, columns = system.num_gradient_rows, system.num_unknowns
    weight_shape, unknown_shape = system.observed_gradient.shape, system.unknown_shape
    if rows <= columns:  # rows K_D^T e_i, one unit weight-shaped vector per call
        adjoint = torch.func.vmap(
            lambda g: operator.gradient_adjoint(g.reshape(weight_shape), d).reshape(-1)
        )
        block = _sparse_rows(adjoint, rows, columns, d, max_entries)
    else:  # columns K_D e_j, one unit input per call
        gradient = torch.func.vmap(
            lambda e: operator.gradient(e.reshape(unknown_shape), d).reshape(-1)
        )
        block = _sparse_rows(gradient, columns, rows, d, max_entries).T.tocsr()
    scale = torch.broadcast_to(system.gradient_scale, weight_shape).reshape(-1)
    return sp.diags(scale.detach().cpu().numpy()) @ block


def _csr(values: Tensor, columns: Tensor, keep: Tensor, rows: int, width: int) -> sp.csr_matrix:
    """A CSR matrix from each row's entries in order: ``values``, ``columns`` and ``keep``
    shaped alike, rows first (flattened to ``rows`` rows), entries where ``keep``."""
    keep = keep.reshape(rows, -1)
    indptr = torch.zeros(rows + 1, dtype=torch.long)
    torch.cumsum(keep.sum(dim=1), dim=0, out=indptr[1:])
    return sp.csr_matrix(
        (values.reshape(rows, -1)[keep].numpy(), columns.reshape(rows, -1)[keep].numpy(), indptr),
        shape=(rows, width),
    )


def indexed_matrix(system: LayerSystem, max_entries: int | None = None) -> sp.csr_matrix | None:
    """``U`` by indexing, for an operator with a :meth:`patch_index`; None for one without, or
    (given ``max_entries``) where ``U`` would hold more entries than that."""
    operator = system.operator
    index = operator.patch_index()
    if index is None:
        return None
    index = index.cpu()
    batch, channels = system.batch, operator.out_channels
    patches, positions = index.shape
    if max_entries is not None and 2 * batch * channels * patches * positions > max_entries:
        return None
    n_in = math.prod(operator.in_shape)
    weight = operator.weight.detach().reshape(channels, -1).cpu().double()
    # each row's entries in order, where the weight meets an input (not padding): rows come out
    # sorted, so the CSR arrays are written directly
    keep = index >= 0  # (q, l)
    columns = torch.arange(batch).reshape(-1, 1, 1) * n_in + index  # (b, q, l)
    forward_scale = system.forward_scale.detach().reshape(batch, channels, positions, 1)
    # forward row (b, o, l): W[o, q] f[b, o, l] at unknown (b, idx[q, l]) for each q
    forward_values = weight.reshape(1, channels, 1, patches) * forward_scale.cpu().double()
    forward = _csr(
        forward_values,
        columns.transpose(1, 2).unsqueeze(1).expand(batch, channels, positions, patches),
        keep.T.expand(batch, channels, positions, patches),
        batch * channels * positions,
        batch * n_in,
    )
    # gradient row (o, q): D[b, o, l] g[o, q] at unknown (b, idx[q, l]) for each b, l
    d = system.output_gradient.detach().reshape(batch, channels, positions).cpu().double()
    gradient_scale = torch.broadcast_to(system.gradient_scale, system.observed_gradient.shape)
    gradient_scale = gradient_scale.detach().reshape(channels, patches).cpu().double()
    gradient_values = d.transpose(0, 1).unsqueeze(1) * gradient_scale[..., None, None]
    gradient = _csr(
        gradient_values,
        columns.transpose(0, 1).expand(channels, patches, batch, positions),
        keep.unsqueeze(1).expand(channels, patches, batch, positions),
        channels * patches,
        batch * n_in,
    )
    matrix = sp.vstack([forward, gradient], format="csr")
    matrix.eliminate_zeros()
    return matrix


def system_matrix(system: LayerSystem, max_entries: int = MAX_ENTRIES) -> sp.csr_matrix:
    """``U`` of ``system`` (rows as scaled) as a float64 CSR matrix of shape ``system.shape``.

    Built by indexing where the operator gives its :meth:`patch_index`, else from products with
    unit vectors, ``max_entries`` at a time (module docstring).
    """
    indexed = indexed_matrix(system)
    if indexed is not None:
        return indexed
    blocks = [_forward_block(system, max_entries), _gradient_block(system, max_entries)]
    matrix = sp.vstack(blocks, format="csr").astype(np.float64)
    matrix.eliminate_zeros()
    return matrix


def forward_gram(system: LayerSystem) -> Tensor | None:
    """The column Gram matrix of :func:`system_matrix`'s forward rows (its first
    ``system.num_forward_rows``), dense float64 on the CPU, one block per sample, from the
    operator's :meth:`~fl_leak.attacks.linear.layers.base.WeightOperator.forward_gram`; None
    where the operator has none."""
    scale = torch.broadcast_to(system.forward_scale, system.target.shape).detach().double()
    blocks = []
    for sample in scale:
        block = system.operator.forward_gram(sample**2)
        if block is None:
            return None
        blocks.append(block.cpu())
    return blocks[0] if len(blocks) == 1 else torch.block_diag(*blocks)


def left_null_vectors(system: LayerSystem) -> sp.csc_matrix:
    """Known dependencies among the rows of ``U``: one column ``y_o`` with ``y_o^T U = 0`` per
    output channel ``o`` whose weight and output gradients are not zero and whose masked forward
    rows all have a zero output gradient.

    A layer linear in its weight has ``sum_{b,l} d[b, o, l] z[b, o, l] = <W_o, G_o>`` for every
    input, so ``y_o`` is ``d / f`` on channel ``o``'s forward rows (``f`` their scale) and
    ``-W_o / g_o`` on its gradient rows (the structural bound,
    :meth:`LayerSystem.deficiency_bound`, counts the same dependencies).
    """
    channels = system.operator.out_channels
    batch, rows = system.batch, system.shape[0]
    d = system.output_gradient.detach().reshape(batch, channels, -1).cpu().double()
    forward_scale = torch.broadcast_to(system.forward_scale, system.target.shape)
    forward_scale = forward_scale.detach().reshape(batch, channels, -1).cpu().double()
    weight = system.operator.weight.detach().reshape(channels, -1).cpu().double()
    gradient_scale = torch.broadcast_to(system.gradient_scale, system.observed_gradient.shape)
    gradient_scale = gradient_scale.detach().reshape(channels, -1)[:, 0].cpu().double()
    masked_used = ((forward_scale == 0) & (d != 0)).any(dim=2).any(dim=0)
    eligible = (weight != 0).any(dim=1) & (gradient_scale != 0) & ~masked_used
    positions, per_channel = d.shape[2], weight.shape[1]
    forward_rows = system.num_forward_rows
    columns = []
    for o in torch.nonzero(eligible).flatten().tolist():
        safe = torch.where(forward_scale[:, o] != 0, forward_scale[:, o], 1.0)
        forward = (d[:, o] / safe).reshape(-1)
        row = (
            torch.arange(batch)[:, None] * (channels * positions)
            + o * positions
            + torch.arange(positions)
        ).reshape(-1)
        gradient = -weight[o] / gradient_scale[o]
        gradient_row = forward_rows + o * per_channel + torch.arange(per_channel)
        values = torch.cat([forward, gradient]).numpy()
        indices = torch.cat([row, gradient_row]).numpy()
        columns.append(sp.csc_matrix((values, (indices, np.zeros_like(indices))), shape=(rows, 1)))
    return sp.hstack(columns, format="csc") if columns else sp.csc_matrix((rows, 0))


def layer_spectrum(
    system: LayerSystem, rtol: float, device: torch.device | str = "cpu"
) -> Spectrum:
    """Rank, condition and weak count of ``system``'s matrix, exactly
    (:func:`~fl_leak.attacks.linear.spectrum.spectrum`): the matrix, its known row dependencies,
    the structural rank bound and the forward rows' Gram matrix, each from the system."""
    return spectrum(
        system_matrix(system),
        rtol,
        system.num_unknowns - system.deficiency_bound(),
        left_null_vectors(system),
        device,
        (system.num_forward_rows, lambda: forward_gram(system)),
    )
