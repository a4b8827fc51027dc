"""Labels of a batch from the last layer's bias gradient.

For the batch-mean cross-entropy the last layer's bias gradient is
``g_j = sum_b s'(z_bj) (p_bj - [y_b = j]) / B``. With a final activation whose derivative is
positive (identity, tanh, sigmoid):

* one sample: the only negative entry of ``g`` is its label;
* a batch: every class with ``g_j < 0`` is present. Counts follow the idea of iLRG
  (Ma et al., 2023) for untrained networks, whose softmax outputs vary little between samples:
  an absent class has ``g_j = mean_b p_bj``, which estimates the mean probability ``p`` a class
  receives, and a present class has ``n_j = B (p - g_j)``. The counts are rounded by largest
  remainders to sum to ``B``, keeping at least one sample of every class with ``g_j < 0``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def round_counts(raw: Tensor, present: Tensor, batch_size: int) -> Tensor:
    """Round non-negative real counts to integers summing to ``batch_size`` (largest remainder),
    keeping at least one sample of every class flagged ``present`` (of the ``batch_size`` with
    the largest counts when more are flagged, as noise on the gradient can make them)."""
    if int(present.sum()) > batch_size:
        kept = torch.zeros_like(present)
        kept[torch.topk(torch.where(present, raw, -torch.inf), batch_size).indices] = True
        present = kept
    counts = torch.floor(raw).long()
    counts[present] = counts[present].clamp_min(1)
    while counts.sum() < batch_size:
        counts[torch.argmax(raw - counts)] += 1
    while counts.sum() > batch_size:
        removable = (counts > present.long()).nonzero().flatten()
        counts[removable[torch.argmin((raw - counts)[removable])]] -= 1
    return counts


def estimate_label_counts(bias_gradient: Tensor, batch_size: int) -> Tensor:
    """Per-class sample counts (summing to ``batch_size``) estimated from ``g`` alone."""
    g = bias_gradient.detach().double().cpu()
    absent = g > 0
    mean_probability = g[absent].mean() if absent.any() else torch.tensor(1.0 / g.numel())
    raw = (batch_size * (mean_probability - g)).clamp_min(0)
    return round_counts(raw, g < 0, batch_size)


def labels_from_counts(counts: Tensor) -> Tensor:
    """The sorted label list with ``counts[j]`` copies of class ``j``."""
    return torch.repeat_interleave(torch.arange(counts.numel()), counts.cpu())


def recover_labels(bias_gradient: Tensor, batch_size: int) -> Tensor:
    """Labels of a batch (sorted) from the last layer's bias gradient ``g``.

    For ``batch_size == 1`` the label is the index of the most negative entry of ``g``.
    """
    if batch_size == 1:
        return torch.argmin(bias_gradient).reshape(1).to(torch.long).cpu()
    return labels_from_counts(estimate_label_counts(bias_gradient, batch_size))
