"""Scores of reconstructions: image quality and matching."""

from fl_leak.metrics.image import (
    BatchScores,
    match_reconstructions,
    mse,
    psnr,
    score_batch,
    ssim,
)

__all__ = [
    "BatchScores",
    "match_reconstructions",
    "mse",
    "psnr",
    "score_batch",
    "ssim",
]
