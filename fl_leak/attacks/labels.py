"""Labels of a batch from the last layer's gradients.

For the batch-mean cross-entropy on ``s(z)``, ``z = W x + b`` (final activation ``s`` with a
positive derivative: identity, tanh, sigmoid), the bias gradient is
``g_j = sum_b s'(z_bj) (p_bj - [y_b = j]) / B`` and the weight gradient is
``G = sum_b d_b x_b^T / B`` with ``d_b = s'(z_b) (p_b - e_{y_b})``.

* One sample: the only negative entry of ``g`` is its label.
* A batch: every class with ``g_j < 0`` is present, and ``n_j = B (s'_j p_j - g_j) / s'_j`` with
  ``p_j`` the mean softmax probability of class ``j`` over the batch. On untrained networks the
  outputs vary little between samples, so ``p`` and ``s'`` are nearly those of the batch's mean
  embedding ``x``, which the weight gradient gives (the idea of iLRG, Ma et al., ICLR 2023): row
  ``j`` of ``G`` is ``g_j x`` plus the deviation of class ``j``'s samples from the mean, so
  ``x`` is the least-squares fit of ``G_j ~ g_j x``, each row weighted by ``1 / (n_j + 1/2)^2``
  (absent and rare classes, whose rows deviate least, count most). Counts and fit are iterated
  from the bias-only estimate (:func:`estimate_label_counts`) until the counts repeat; then again
  with each present class's own mean embedding, read from its row's deviation from ``g_j x``
  (iLRG's per-class embeddings), for networks whose outputs differ between classes.

What limits it: with ``B`` above the number of classes ``C`` the weight gradient (rank ``<= C``)
cannot give each sample's embedding, only class-level ones, and those only up to one common
vector ``v``: moving the batch's mean embedding by ``v``, class ``j``'s by ``(p_j / a_j) v``
(``a_j = n_j / B``) and the counts by ``B J W v`` (``J`` the softmax Jacobian) leaves ``g``
and ``G`` unchanged to first order. The fit takes the member with the
least spread of class means; an error ``e`` in the batch's mean output moves count ``j`` by
about ``B p_j e``, so networks whose untrained outputs differ between classes (cnn2_c1, cnn2_c5)
miss from ``B = 64``, while fed each class's true mean embedding (:func:`raw_counts`) the
counts are exact.

The bias-only estimate treats every class's mean probability as the mean ``g_j`` of the absent
classes; it needs classes absent from the batch and is kept as the baseline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from fl_leak.attacks.linear.last_layer import LastLayer

# A class's row weight is 1 / (n_j + PRIOR)^2: finite for absent classes.
PRIOR = 0.5
# Rounds of (fit the mean embedding, re-count) at most; the counts usually settle in 2-3.
ROUNDS = 10


def round_counts(raw: Tensor, present: Tensor, batch_size: int) -> Tensor:
    """Round real counts to integers summing to ``batch_size`` (largest remainder), keeping at
    least one sample of every class flagged ``present`` (of the ``batch_size`` with the largest
    counts when more are flagged, as noise on the gradient can make them).

    Counts are first clipped to ``[0, batch_size]`` (NaN read as 0): a saturated output's tiny
    slope can make an estimate huge, and the rounding moves one sample at a time.
    """
    raw = raw.nan_to_num(0.0).clamp(0, batch_size)
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


def class_embeddings(
    weight_gradient: Tensor, bias_gradient: Tensor, counts: Tensor, per_class: bool
) -> Tensor | None:
    """Each class's mean embedding (one row per class) implied by the gradients and ``counts``.

    The batch's mean ``x`` is the weighted least-squares fit of ``G_j ~ g_j x``; with
    ``per_class``, a present class's own mean is ``x - B (G_j - g_j x) / n_j`` (row ``j`` of
    ``B (G - g x^T)`` is ``-n_j`` times its samples' deviation from ``x``, less their small
    probabilities' share), an absent one's stays ``x``. None when ``g`` is zero.
    """
    g, G = bias_gradient, weight_gradient
    weights = g / (counts + PRIOR) ** 2
    norm = float(weights @ g)
    if norm <= 0:
        return None
    mean = G.T @ weights / norm
    embeddings = mean.expand(g.numel(), -1).clone()
    if per_class:
        present = counts > 0
        deviation = G[present] - g[present, None] * mean
        embeddings[present] -= int(counts.sum()) * deviation / counts[present, None]
    return embeddings


def raw_counts(layer: LastLayer, embeddings: Tensor, counts: Tensor) -> Tensor:
    """Real-valued class counts implied by the bias gradient when class ``k``'s samples all have
    the mean embedding ``embeddings[k]`` and ``counts`` (float64) samples per class weight the
    other classes' shares: ``n_i = (sum_k n_k s'_ki q_ki - B g_i) / s'_ii``, with ``B`` the sum of
    ``counts``, ``q_k`` and ``s'_k`` the softmax and final slopes at class ``k``'s outputs.
    """
    g = layer.bias_gradient.detach().double().cpu()
    W = layer.weight.detach().double().cpu()
    b = layer.bias.detach().double().cpu()
    outputs = layer.activation.forward(embeddings.double() @ W.T + b)
    slope = layer.activation.derivative(outputs).clamp_min(torch.finfo(g.dtype).tiny)
    share = (counts[:, None] * slope * torch.softmax(outputs, dim=1)).sum(0)
    return (share - float(counts.sum()) * g) / torch.diagonal(slope)


def counts_from_weight_gradient(layer: LastLayer, batch_size: int) -> Tensor:
    """Per-class sample counts (summing to ``batch_size``) from the last layer's weight and bias
    gradients and its weights (module docstring).

    From class ``k``'s mean embedding, its samples' outputs ``y_k``, slopes ``s'_k`` and
    probabilities ``q_k``: ``B g_i = sum_k n_k s'_ki q_ki - n_i s'_ii``, iterated for ``n_i``.
    A first stage gives every class the batch's mean embedding, a second its own
    (:func:`class_embeddings`), which helps once the network has trained.
    """
    g = layer.bias_gradient.detach().double().cpu()
    G = layer.weight_gradient.detach().double().cpu()
    counts = estimate_label_counts(g, batch_size)
    for per_class in (False, True):
        for _ in range(ROUNDS):
            embeddings = class_embeddings(G, g, counts.double(), per_class)
            if embeddings is None:  # a zero bias gradient: nothing to fit
                return counts
            raw = raw_counts(layer, embeddings, counts.double())
            updated = round_counts(raw, g < 0, batch_size)
            if torch.equal(updated, counts):
                break
            counts = updated
    return counts


def labels_from_counts(counts: Tensor) -> Tensor:
    """The sorted label list with ``counts[j]`` copies of class ``j``."""
    return torch.repeat_interleave(torch.arange(counts.numel()), counts.cpu())


def batch_labels(layer: LastLayer, batch_size: int) -> Tensor:
    """Labels of a batch (sorted, on the CPU) from the last layer and its gradients.

    For ``batch_size == 1`` the label is the index of the most negative entry of the bias
    gradient; for a batch, :func:`counts_from_weight_gradient`.
    """
    if batch_size == 1:
        return torch.argmin(layer.bias_gradient).reshape(1).to(torch.long).cpu()
    return labels_from_counts(counts_from_weight_gradient(layer, batch_size))
