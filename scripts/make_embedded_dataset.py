"""Regenerate ``fl_leak/data/embedded/embedded.npz`` from the photographs shipped with scikit-image.

Each class is one photograph; its images are square crops at random positions and scales, resized
to 32x32 with anti-aliasing. Grey photographs are replicated to three channels. Crops that are
nearly uniform (standard deviation below ``MIN_STD``, e.g. the black sky of the deep field or the
corners of the retina) are redrawn. The output is deterministic for a given seed and library
versions::

    .venv/bin/python scripts/make_embedded_dataset.py [--seed 0] [--out PATH]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import skimage
import skimage.io
import skimage.transform

# (class name, file in skimage/data). Sources and licences: fl_leak/data/embedded/README.md.
PHOTOGRAPHS: tuple[tuple[str, str], ...] = (
    ("astronaut", "astronaut.png"),
    ("chelsea", "chelsea.png"),
    ("coffee", "coffee.png"),
    ("hubble_deep_field", "hubble_deep_field.jpg"),
    ("immunohistochemistry", "ihc.png"),
    ("retina", "retina.jpg"),
    ("rocket", "rocket.jpg"),
    ("brick", "brick.png"),
    ("camera", "camera.png"),
    ("coins", "coins.png"),
    ("grass", "grass.png"),
    ("gravel", "gravel.png"),
)
SIZE = 32
TRAIN_PER_CLASS = 32
TEST_PER_CLASS = 8
MIN_SCALE, MAX_SCALE = 0.12, 0.6  # crop side as a fraction of the photograph's shorter side
MIN_STD = 0.05  # redraw crops flatter than this (intensities in [0, 1])
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "fl_leak" / "data" / "embedded" / "embedded.npz"


def load_photograph(filename: str) -> np.ndarray:
    """Read a photograph from scikit-image's bundled data as float RGB (H, W, 3) in [0, 1]."""
    image = skimage.io.imread(Path(skimage.__file__).parent / "data" / filename)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return image[..., :3].astype(np.float64) / 255.0


def random_crops(image: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``count`` square crops at random scales, resized to uint8 (count, 3, SIZE, SIZE)."""
    height, width = image.shape[:2]
    crops = []
    while len(crops) < count:
        side = int(rng.uniform(MIN_SCALE, MAX_SCALE) * min(height, width))
        top = int(rng.integers(0, height - side + 1))
        left = int(rng.integers(0, width - side + 1))
        crop = skimage.transform.resize(
            image[top : top + side, left : left + side], (SIZE, SIZE), order=1, anti_aliasing=True
        )
        if crop.std() >= MIN_STD:
            crops.append(np.clip(np.round(crop * 255.0), 0, 255).astype(np.uint8))
    return np.stack(crops).transpose(0, 3, 1, 2)


def build(seed: int) -> dict[str, np.ndarray]:
    """Build the train and test splits: uint8 images (N, 3, 32, 32), int64 labels, class names."""
    rng = np.random.default_rng(seed)
    per_class = TRAIN_PER_CLASS + TEST_PER_CLASS
    splits: dict[str, list[np.ndarray]] = {"x_train": [], "y_train": [], "x_test": [], "y_test": []}
    for label, (_, filename) in enumerate(PHOTOGRAPHS):
        crops = random_crops(load_photograph(filename), per_class, rng)
        splits["x_train"].append(crops[:TRAIN_PER_CLASS])
        splits["x_test"].append(crops[TRAIN_PER_CLASS:])
        splits["y_train"].append(np.full(TRAIN_PER_CLASS, label, dtype=np.int64))
        splits["y_test"].append(np.full(TEST_PER_CLASS, label, dtype=np.int64))
    arrays = {key: np.concatenate(parts) for key, parts in splits.items()}
    arrays["class_names"] = np.array([name for name, _ in PHOTOGRAPHS])
    return arrays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    arrays = build(args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(
        f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB): "
        f"{len(arrays['x_train'])} train + {len(arrays['x_test'])} test images, "
        f"{len(PHOTOGRAPHS)} classes"
    )


if __name__ == "__main__":
    main()
