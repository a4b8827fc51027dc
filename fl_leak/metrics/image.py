"""Image-quality scores of reconstructions against originals: MSE, PSNR, SSIM, and matching.

Images are ``(C, H, W)`` or batches ``(..., C, H, W)`` (tensors or arrays) with intensities in
[0, 1]. Nothing is clipped: a reconstruction outside [0, 1] is scored as it is. Scores are computed
in float64 and returned as float64 tensors with one value per image (shape ``image.shape[:-3]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from scipy.optimize import linear_sum_assignment
from skimage.metrics import structural_similarity
from torch import Tensor

Images = Tensor | npt.NDArray[np.floating]
SSIM_GAUSSIAN_WINDOW = 11  # the side of the Gaussian window of sigma 1.5 (truncated at 3.5 sigma)


def _pair(a: Images, b: Images) -> tuple[Tensor, Tensor]:
    a = torch.as_tensor(a).detach().to("cpu", torch.float64)
    b = torch.as_tensor(b).detach().to("cpu", torch.float64)
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {tuple(a.shape)} and {tuple(b.shape)}")
    if a.ndim < 3:
        raise ValueError(f"images must be (C, H, W) or (..., C, H, W), got shape {tuple(a.shape)}")
    return a, b


def mse(a: Images, b: Images) -> Tensor:
    """Mean squared error of each image pair, averaged over channels and pixels."""
    a, b = _pair(a, b)
    return (a - b).square().mean(dim=(-3, -2, -1))


def psnr(a: Images, b: Images, peak: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio ``10 log10(peak^2 / mse)`` in dB of each image pair.

    Identical images (MSE exactly 0) give ``+inf``; it is returned as such, so callers that
    average should expect an infinite mean when any reconstruction is exact.
    """
    error = mse(a, b)
    return torch.where(error == 0, torch.inf, 10.0 * torch.log10(peak**2 / error))


def ssim(a: Images, b: Images) -> Tensor:
    """Structural similarity of each image pair, by scikit-image.

    Uses the settings of Wang et al. (2004): an 11x11 Gaussian window with sigma 1.5, population
    covariances, and data range 1, computed per channel and averaged. Images smaller than the
    window (a side under 11 pixels) use a uniform window of the largest odd size that fits; a side
    under 3 pixels gives NaN.
    """
    a, b = _pair(a, b)
    flat_a = a.reshape(-1, *a.shape[-3:]).numpy()
    flat_b = b.reshape(-1, *b.shape[-3:]).numpy()
    side = min(a.shape[-2:])
    if side < 3:
        return torch.full(a.shape[:-3], torch.nan, dtype=torch.float64)
    window: dict[str, Any] = (
        {"gaussian_weights": True, "sigma": 1.5}
        if side >= SSIM_GAUSSIAN_WINDOW
        else {"win_size": side - 1 + side % 2}
    )
    values = [
        structural_similarity(
            x, y, use_sample_covariance=False, data_range=1.0, channel_axis=0, **window
        )
        for x, y in zip(flat_a, flat_b, strict=True)
    ]
    return torch.tensor(values, dtype=torch.float64).reshape(a.shape[:-3])


def _batch_pair(originals: Images, reconstructions: Images) -> tuple[Tensor, Tensor]:
    originals, reconstructions = _pair(originals, reconstructions)
    if originals.ndim != 4:
        raise ValueError(f"expected batches (B, C, H, W), got shape {tuple(originals.shape)}")
    return originals, reconstructions


def match_reconstructions(originals: Images, reconstructions: Images) -> np.ndarray:
    """Pair each original with a distinct reconstruction, minimising the total MSE.

    Hungarian matching (``scipy.optimize.linear_sum_assignment``) on the matrix of per-pair MSE.

    Parameters
    ----------
    originals, reconstructions : (B, C, H, W) tensors or arrays

    Returns
    -------
    np.ndarray
        int64 permutation ``perm`` such that ``reconstructions[perm[i]]`` is matched to
        ``originals[i]``.
    """
    originals, reconstructions = _batch_pair(originals, reconstructions)
    flat_originals = originals.flatten(start_dim=1)
    flat_reconstructions = reconstructions.flatten(start_dim=1)
    distances = torch.cdist(
        flat_originals, flat_reconstructions, compute_mode="donot_use_mm_for_euclid_dist"
    )
    cost = distances.square() / flat_originals.shape[1]
    rows, cols = linear_sum_assignment(cost.numpy())
    return cols[np.argsort(rows)].astype(np.int64)


@dataclass(frozen=True)
class BatchScores:
    """Scores of a batch of reconstructions after matching them to the originals.

    Attributes
    ----------
    permutation : np.ndarray
        ``reconstructions[permutation[i]]`` was scored against ``originals[i]``.
    psnr, ssim, mse : Tensor
        One float64 value per original, in the originals' order.
    """

    permutation: np.ndarray
    psnr: Tensor
    ssim: Tensor
    mse: Tensor

    @property
    def mean_psnr(self) -> float:
        """Mean PSNR in dB (``inf`` if any reconstruction is exact)."""
        return float(self.psnr.mean())

    @property
    def mean_ssim(self) -> float:
        """Mean SSIM."""
        return float(self.ssim.mean())

    @property
    def mean_mse(self) -> float:
        """Mean MSE."""
        return float(self.mse.mean())


def score_batch(originals: Images, reconstructions: Images) -> BatchScores:
    """Match reconstructions to originals (``match_reconstructions``), then score each pair."""
    originals, reconstructions = _batch_pair(originals, reconstructions)
    permutation = match_reconstructions(originals, reconstructions)
    matched = reconstructions[torch.from_numpy(permutation)]
    return BatchScores(
        permutation=permutation,
        psnr=psnr(originals, matched),
        ssim=ssim(originals, matched),
        mse=mse(originals, matched),
    )
