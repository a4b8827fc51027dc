"""The statistics of a data set's images that the noise prediction needs
(:mod:`fl_leak.metrics.noise_prediction`)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class ImageStatistics:
    """Errors of three reference reconstructions, as mean squares over the pixels."""

    mean_square: float  # the images' mean squared pixel (error of an all-zero image)
    flat_error: float  # error of each image's flat mean-colour image
    unrelated_error: float  # error of an unrelated, saturated random image in [0, 1]

    @classmethod
    def of(cls, images: Tensor) -> ImageStatistics:
        """From images in ``[0, 1]``, ``(N, C, H, W)``."""
        images = images.double()
        mean_square = float(images.pow(2).mean())
        return cls(
            mean_square=mean_square,
            flat_error=float(images.var((2, 3), unbiased=False).mean()),
            unrelated_error=mean_square - float(images.mean()) + 0.5,
        )

    @classmethod
    def each(cls, images: Tensor) -> list[ImageStatistics]:
        """One :meth:`of` per image of ``images`` (``(N, C, H, W)`` in ``[0, 1]``)."""
        return [cls.of(image.unsqueeze(0)) for image in images]
