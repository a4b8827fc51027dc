"""Predicted PSNR of the noise-aware linear attack under Gaussian update noise, from the model.

The prediction follows the noise-aware walk (:mod:`fl_leak.attacks.linear.noise`) layer by layer
at a probe input (:func:`~fl_leak.metrics.audit.probe_layers`), on the systems that walk solves
(rows equilibrated), from their singular values ``s_i`` (dense SVD). For a relative update noise
``sigma``:

* the right-hand side of layer ``l`` carries noise of norm ``eps_l``: ``sqrt(sigma^2 + d_l^2)``
  of its gradient block (the update's noise, and the relative error ``d_l`` of the output
  gradients ``D`` built from the layers above, including the slopes of leaky ReLU outputs that
  the error moves across the kink) and ``e_{l+1} g`` of its forward block (the relative error of
  the reconstructed output above, times the gain ``g`` of the inverse activation: an output
  error ``dy`` is ``dy / s'`` on the target);
* the solve stopped at the noise level acts as a Wiener filter: a direction of singular value
  ``s`` is recovered in the share ``phi = s^2 / (s^2 + lambda^2)`` with ``lambda^2 = nu / tau^2``,
  ``nu = eps^2 / rows`` the noise per row and ``tau^2 = ||x||^2 / unknowns`` the signal per
  unknown, so the expected squared error is ``nu sum phi^2 / s^2`` (propagated noise) plus
  ``tau^2 (sum (1 - phi)^2 + unknowns - len(s))`` (the bias of filtered and missing directions);
* ``e_l`` is that error over ``||x_l||``; the last layer's inputs start at
  ``e = sigma sqrt(2 / m)`` for ``m`` classes (its closed form ``G^T g / (g . g)``: the noise of
  ``G`` and that of ``g`` each give ``sigma / sqrt(m)``) and ``d = sigma`` (the bias gradient).

Below ``noise_threshold`` the walk does not count the update as noisy and solves each layer in
the plain least-squares sense: every direction is then recovered (``phi = 1``) and its noise
propagated in full.

The input's predicted mean squared error is ``e_0^2`` times an image's mean square, capped by the
error of an unrelated image in ``[0, 1]`` (a clamped reconstruction); on a noisy update the walk
returns the flat least-squares image instead where that fits the update ``FLAT_MARGIN`` times
better, taken here as an error above ``FLAT_MARGIN`` times the image's flat-image error. The
prediction is made per image and the PSNRs averaged, as the attacks' reports average them (a
mean of PSNRs is not the PSNR of the mean error: on two embedded images of mean squares 0.24 and
0.012 the two differ by 3.8 dB). Batch 1 only; the images' statistics (mean square, flat-image
error) are inputs, the rest comes from the model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fl_leak.attacks.linear.activations import LeakyReLU
from fl_leak.attacks.linear.chain import parse_chain
from fl_leak.attacks.linear.noise import FLAT_MARGIN, NoiseOptions
from fl_leak.metrics.audit import probe_layers
from fl_leak.metrics.image_statistics import ImageStatistics

KINK_WINDOW = 0.1  # outputs within this share of their RMS estimate the density at the kink


@dataclass(frozen=True)
class LayerSpectrum:
    """What the prediction needs of one layer's weighted system."""

    singular: Tensor  # descending singular values of the weighted, scaled system
    rows: int
    unknowns: int
    input_norm: float  # ||x_l|| at the probe
    forward_rhs: float  # norm of the forward block of the right-hand side
    gradient_rhs: float  # norm of the gradient block
    forward_gain: float = 1.0  # relative error of the forward target per relative output error
    kink_density: float = 0.0  # leaky ReLU: density of its outputs / their RMS at 0 (else 0)
    kink_jump: float = 0.0  # leaky ReLU: 1 - slope, the derivative's jump at the kink
    outputs: int = 0  # entries of the layer's output


def layer_spectra(
    model: nn.Module, input_shape: Sequence[int], seed: int = 0
) -> list[LayerSpectrum]:
    """Each layer's (below the last) system at a seeded probe input, input layer first."""
    probe = probe_layers(model, input_shape, 1, seed, scaled=True)
    spectra = []
    for index, system in enumerate(probe.systems):
        output = probe.inputs[index + 1]
        activation = probe.blocks[index].activation
        rhs = system.rhs()
        split = system.num_forward_rows
        slope = activation.derivative(output)
        pre_activation = activation.inverse(output).pre_activation
        # an error dy of the output is dy / s' on the forward target s^-1(y)
        gain = float(output.pow(2).mean().sqrt() * slope[slope > 0].pow(-2).mean().sqrt())
        gain /= float(pre_activation.pow(2).mean().sqrt())
        jump = 1.0 - activation.slope if isinstance(activation, LeakyReLU) else 0.0
        relative = output.abs() / output.pow(2).mean().sqrt()
        density = float((relative < KINK_WINDOW).double().mean()) / KINK_WINDOW
        spectra.append(
            LayerSpectrum(
                singular=torch.linalg.svdvals(system.dense()),
                rows=system.shape[0],
                unknowns=system.num_unknowns,
                input_norm=float(probe.inputs[index].norm()),
                forward_rhs=float(rhs[:split].norm()),
                gradient_rhs=float(rhs[split:].norm()),
                forward_gain=gain,
                kink_density=density if 0 < jump < 1 else 0.0,
                kink_jump=jump if 0 < jump < 1 else 0.0,
                outputs=output.numel(),
            )
        )
    return spectra


def _filtered_error(layer: LayerSpectrum, noise: float, plain: bool) -> float:
    """Relative error of the Wiener-filtered solve (of the plain least-squares solve if
    ``plain``) with right-hand-side noise of norm ``noise``."""
    per_row = noise**2 / layer.rows
    per_unknown = layer.input_norm**2 / layer.unknowns
    damping = 0.0 if plain else per_row / per_unknown
    s2 = layer.singular.double().pow(2)
    share = s2 / (s2 + damping)
    propagated = per_row * float((share.pow(2) / s2.clamp_min(1e-300)).sum())
    missing = layer.unknowns - layer.singular.numel()
    bias = per_unknown * (float((1 - share).pow(2).sum()) + missing)
    return math.sqrt(propagated + bias) / layer.input_norm


def predicted_error(
    spectra: Sequence[LayerSpectrum], sigma: float, classes: int, plain: bool = False
) -> float:
    """The input's predicted relative error ``e_0`` at relative update noise ``sigma``, of the
    noise-aware walk (of the plain least-squares walk if ``plain``)."""
    error, derivative = sigma * math.sqrt(2.0 / classes), sigma
    for layer in reversed(spectra):
        # outputs within the error of the kink flip their slope: a share density * e of the
        # entries of D changes by the jump, counted where the median number of flips is >= 1
        flipped = min(1.0, layer.kink_density * error)
        flipped *= flipped * layer.outputs >= math.log(2)
        derivative = math.sqrt(derivative**2 + error**2 + flipped * layer.kink_jump**2)
        gradient = math.sqrt(sigma**2 + derivative**2) * layer.gradient_rhs
        noise = math.hypot(gradient, error * layer.forward_gain * layer.forward_rhs)
        error = _filtered_error(layer, noise, plain)
    return error


def predict_psnr(
    spectra: Sequence[LayerSpectrum],
    sigma: float,
    images: Sequence[ImageStatistics],
    classes: int,
    noise_threshold: float = NoiseOptions.noise_threshold,
) -> float:
    """Predicted PSNR (peak 1) at relative update noise ``sigma``, the mean over ``images``
    (module docstring).

    ``images``: each image's statistics (:meth:`ImageStatistics.each`); ``classes``: the last
    layer's outputs; ``noise_threshold``: the walk's (below it, the plain least-squares solve).
    """
    if not images:
        raise ValueError("predict_psnr needs the statistics of at least one image")
    plain = sigma < noise_threshold
    relative = predicted_error(spectra, sigma, classes, plain)
    scores = []
    for image in images:
        squared = min(relative**2 * image.mean_square, image.unrelated_error)
        if not plain and squared > FLAT_MARGIN * image.flat_error:
            squared = image.flat_error
        scores.append(-10.0 * math.log10(max(squared, 1e-20)))
    return sum(scores) / len(scores)


def predicted_psnrs(
    model: nn.Module,
    input_shape: Sequence[int],
    levels: Sequence[float],
    images: Sequence[ImageStatistics],
    seed: int = 0,
) -> dict[float, float]:
    """:func:`predict_psnr` at each relative noise level of ``levels``, from ``model``'s systems at
    a seeded probe (:func:`layer_spectra`) and each image's statistics (``images``)."""
    spectra = layer_spectra(model, input_shape, seed)
    zeros = [torch.zeros_like(p) for p in model.parameters()]
    classes = parse_chain(model, zeros, input_shape).last.operator.out_channels
    return {float(level): predict_psnr(spectra, float(level), images, classes) for level in levels}
