"""Seeded synthetic volumes for tests: bright ellipsoids on a noisy background."""

from __future__ import annotations

import numpy as np

from carina.data.datasets import Case
from carina.io import Volume


def synthetic_case(
    shape: tuple[int, int, int] = (32, 32, 32),
    *,
    labels: int = 2,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    noise: float = 0.1,
    seed: int = 0,
) -> Case:
    """An image with ``labels`` non-overlapping ellipsoids and the matching label map.

    Label ``n`` has intensity about ``n / labels``; the image is float32, the label map uint8.
    The affine is diagonal RAS with the given spacing.
    """
    rng = np.random.default_rng(seed)
    grid = np.indices(shape, dtype=np.float32)
    label = np.zeros(shape, dtype=np.uint8)
    size = np.asarray(shape, dtype=np.float32)
    for value in range(1, labels + 1):
        for _ in range(100):
            centre = rng.uniform(0.25, 0.75, 3) * size
            radii = rng.uniform(0.08, 0.18, 3) * size
            inside = (((grid - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(
                0
            ) <= 1
            if not np.any(label[inside]):
                label[inside] = value
                break
    image = label.astype(np.float32) / max(labels, 1) + rng.normal(0, noise, shape).astype(
        np.float32
    )
    affine = np.diag([*spacing, 1.0])
    volume = Volume(array=image, affine=affine)
    return Case(volume, volume.with_array(label))
