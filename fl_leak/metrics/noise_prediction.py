"""Predicted PSNR of the noise-aware linear attack under Gaussian update noise, from the model.

The prediction follows the noise-aware walk (:mod:`fl_leak.attacks.linear.noise`) layer by layer
at a probe input (:func:`~fl_leak.metrics.audit.probe_layers`), on the systems that walk solves
(rows equilibrated, forward rows weighted by the activation's slope), from their singular values
``s_i`` (dense SVD). For a relative update noise ``sigma``:

* the right-hand side of layer ``l`` carries noise of norm ``eps_l``: ``sqrt(sigma^2 + d_l^2)``
  of its gradient block (the update's noise, and the relative error ``d_l`` of the output
  gradients ``D`` built from the layers above) and ``e_{l+1}`` of its forward block (the relative
  error of the reconstructed output above; slope-weighted rows measure it in the output's units);
* the solve stopped at the noise level acts as a Wiener filter: a direction of singular value
  ``s`` is recovered in the share ``phi = s^2 / (s^2 + lambda^2)`` with ``lambda^2 = nu / tau^2``,
  ``nu = eps^2 / rows`` the noise per row and ``tau^2 = ||x||^2 / unknowns`` the signal per
  unknown, so the expected squared error is ``nu sum phi^2 / s^2`` (propagated noise) plus
  ``tau^2 (sum (1 - phi)^2 + unknowns - len(s))`` (the bias of filtered and missing directions);
* ``e_l`` is that error over ``||x_l||``; the last layer's inputs start at ``e = sigma`` (its
  closed form divides ``G^T g`` by ``g . g``, both noisy) and ``d = sigma`` (the bias gradient).

The input's predicted mean squared error is ``e_0^2`` times the data's mean square; where the
input layer's relative inconsistency (the share ``sqrt((rows - unknowns) / rows)`` of ``eps_0``
left in the residual, over ``||V_0||``) exceeds the walk's ``flat_above`` the
walk returns the flat least-squares image, predicted at the data's flat-image error; and a clamped
reconstruction's error cannot exceed that of an unrelated image in ``[0, 1]``. Batch 1 only; the
data's statistics (mean square, flat-image error) are inputs, the rest comes from the model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from fl_leak.attacks.linear.noise import NoiseOptions, forward_weights
from fl_leak.metrics.audit import probe_layers


@dataclass(frozen=True)
class LayerSpectrum:
    """What the prediction needs of one layer's weighted system."""

    singular: Tensor  # descending singular values of the weighted, scaled system
    rows: int
    unknowns: int
    input_norm: float  # ||x_l|| at the probe
    forward_rhs: float  # norm of the forward block of the right-hand side
    gradient_rhs: float  # norm of the gradient block


def layer_spectra(
    model: nn.Module, input_shape: Sequence[int], seed: int = 0
) -> list[LayerSpectrum]:
    """Each layer's (below the last) weighted system at a seeded probe input, input layer first."""
    probe = probe_layers(model, input_shape, 1, seed, scaled=True)
    spectra = []
    for index, system in enumerate(probe.systems):
        output = probe.inputs[index + 1]
        weighted = replace(
            system, forward_weight=forward_weights(probe.blocks[index].activation, output)
        )
        rhs = weighted.rhs()
        split = weighted.num_forward_rows
        spectra.append(
            LayerSpectrum(
                singular=torch.linalg.svdvals(weighted.dense()),
                rows=weighted.shape[0],
                unknowns=weighted.num_unknowns,
                input_norm=float(probe.inputs[index].norm()),
                forward_rhs=float(rhs[:split].norm()),
                gradient_rhs=float(rhs[split:].norm()),
            )
        )
    return spectra


def _filtered_error(layer: LayerSpectrum, noise: float) -> float:
    """Relative error of the Wiener-filtered solve with right-hand-side noise of norm ``noise``."""
    per_row = noise**2 / layer.rows
    per_unknown = layer.input_norm**2 / layer.unknowns
    damping = per_row / per_unknown
    s2 = layer.singular.double().pow(2)
    share = s2 / (s2 + damping)
    propagated = per_row * float((share.pow(2) / s2.clamp_min(1e-300)).sum())
    missing = layer.unknowns - layer.singular.numel()
    bias = per_unknown * (float((1 - share).pow(2).sum()) + missing)
    return math.sqrt(propagated + bias) / layer.input_norm


def predicted_errors(spectra: Sequence[LayerSpectrum], sigma: float) -> tuple[float, float]:
    """The input's relative error ``e_0`` and its layer's relative inconsistency, at ``sigma``."""
    error = derivative = sigma
    inconsistency = 0.0
    for layer in reversed(spectra):
        gradient = math.sqrt(sigma**2 + derivative**2) * layer.gradient_rhs
        noise = math.hypot(gradient, error * layer.forward_rhs)
        excess = max(layer.rows - layer.unknowns, 0) / layer.rows  # share left in the residual
        inconsistency = (
            noise * math.sqrt(excess) / math.hypot(layer.gradient_rhs, layer.forward_rhs)
        )
        derivative = math.hypot(derivative, error)
        error = _filtered_error(layer, noise)
    return error, inconsistency


def predict_psnr(
    spectra: Sequence[LayerSpectrum],
    sigma: float,
    mean_square: float,
    flat_error: float,
    unrelated_error: float,
    options: NoiseOptions = NoiseOptions(),
) -> float:
    """Predicted PSNR (peak 1) at relative update noise ``sigma`` (module docstring).

    ``mean_square``: the data's mean squared pixel; ``flat_error``: the mean squared error of its
    flat mean-colour images; ``unrelated_error``: the error of an unrelated clamped image (the
    ceiling of a lost reconstruction).
    """
    error, inconsistency = predicted_errors(spectra, sigma)
    if inconsistency > options.flat_above:
        squared = flat_error
    else:
        squared = min(error**2 * mean_square, unrelated_error)
    return -10.0 * math.log10(max(squared, 1e-20))
