"""Image-quality metrics against hand computations and scikit-image, and batch matching."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from fl_leak.metrics import match_reconstructions, mse, psnr, score_batch, ssim


def _images(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_psnr_matches_a_hand_computation() -> None:
    a = torch.zeros(3, 4, 4)
    b = torch.full((3, 4, 4), 0.1)
    b[0, 0, 0] = 0.5  # squared errors: 47 pixels of 0.01, one of 0.25
    expected_mse = (47 * 0.01 + 0.25) / 48
    assert mse(a, b).item() == pytest.approx(expected_mse)
    assert psnr(a, b).item() == pytest.approx(10 * math.log10(1 / expected_mse))
    assert psnr(a, b, peak=255).item() == pytest.approx(10 * math.log10(255**2 / expected_mse))


def test_psnr_is_per_image_and_infinite_for_identical_images() -> None:
    a = _images(2, 3, 8, 8)
    b = a.clone()
    b[1] += 0.01
    values = psnr(a, b)
    assert values.shape == (2,) and values.dtype == torch.float64
    assert values[0] == math.inf
    assert values[1].item() == pytest.approx(40.0)
    assert psnr(a[0], b[0]).shape == ()


def test_metrics_accept_numpy_arrays() -> None:
    a = _images(2, 3, 8, 8)
    b = _images(2, 3, 8, 8, seed=1)
    assert torch.equal(mse(a.numpy(), b.numpy()), mse(a, b))


def test_ssim_matches_scikit_image() -> None:
    a = _images(3, 3, 32, 32)
    b = (a + 0.2 * _images(3, 3, 32, 32, seed=1)).clamp(0, 1)
    values = ssim(a, b)
    for i in range(3):
        expected = structural_similarity(
            a[i].permute(1, 2, 0).numpy(),
            b[i].permute(1, 2, 0).numpy(),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
            channel_axis=-1,
        )
        assert values[i].item() == pytest.approx(expected, abs=1e-12)
    assert ssim(a, a).tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert ssim(a[:, :1], b[:, :1]).shape == (3,)  # one channel


def test_matching_recovers_a_known_permutation() -> None:
    originals = _images(6, 3, 16, 16)
    order = np.array([4, 0, 5, 2, 1, 3])
    noisy = (originals + 0.05 * _images(6, 3, 16, 16, seed=1))[order]
    permutation = match_reconstructions(originals, noisy)
    assert np.array_equal(order[permutation], np.arange(6))
    assert permutation.dtype == np.int64


def test_score_batch_scores_matched_pairs() -> None:
    originals = _images(4, 3, 16, 16)
    reconstructions = originals.flip(0).clone()
    reconstructions[0] += 0.1  # the reconstruction of original 3
    scores = score_batch(originals, reconstructions)
    assert scores.permutation.tolist() == [3, 2, 1, 0]
    assert scores.psnr[:3].tolist() == [math.inf] * 3
    assert scores.psnr[3].item() == pytest.approx(20.0)
    assert scores.mse.tolist() == pytest.approx([0, 0, 0, 0.01])
    assert scores.ssim[:3].tolist() == pytest.approx([1.0] * 3)
    assert scores.mean_psnr == math.inf
    assert scores.mean_mse == pytest.approx(0.0025)
    assert scores.mean_ssim == pytest.approx(float(scores.ssim.mean()))


def test_shape_mismatches_raise_clear_errors() -> None:
    a = _images(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"image shapes differ: \(2, 3, 8, 8\) and \(2, 3, 8, 7\)"):
        psnr(a, a[..., :7])
    with pytest.raises(ValueError, match="image shapes differ"):
        ssim(a, a[:1])
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        mse(torch.zeros(8, 8), torch.zeros(8, 8))
    with pytest.raises(ValueError, match=r"batches \(B, C, H, W\)"):
        match_reconstructions(a[0], a[0])
    with pytest.raises(ValueError, match="image shapes differ"):
        score_batch(a, a[:1])


def test_ssim_of_images_smaller_than_its_window():
    image = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    other = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))

    assert torch.allclose(ssim(image, image), torch.ones(2, dtype=torch.float64))
    assert (ssim(image, other) < 0.5).all()
    assert torch.isnan(ssim(image[..., :2, :2], other[..., :2, :2])).all()
