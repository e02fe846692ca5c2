"""Guidance for interactive models: Gaussian click maps, clicks inside masks, corrective clicks.

Points are voxel indices ``[i, j, k]`` (2D: ``[i, j]``) of the array they refer to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

Point = tuple[int, ...]
BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float32]


def gaussian_map(shape: Sequence[int], points: npt.ArrayLike, sigma: float) -> FloatArray:
    """A map of Gaussian blobs (peak 1) at ``points``, the maximum where blobs overlap.

    Only a window of 3 sigma around each point is computed, so the cost does not grow with the
    image. Points outside the array are ignored.
    """
    out = np.zeros(tuple(shape), dtype=np.float32)
    radius = max(1, int(np.ceil(3 * sigma)))
    for point in np.asarray(points, dtype=np.float64).reshape(-1, len(shape)):
        centre = np.asarray(point, dtype=np.float64)
        if np.any(centre < 0) or np.any(centre > np.asarray(shape) - 1):
            continue
        low = np.maximum(np.floor(centre).astype(int) - radius, 0)
        high = np.minimum(np.floor(centre).astype(int) + radius + 1, shape)
        axes = [
            np.arange(a, b, dtype=np.float32) - c for a, b, c in zip(low, high, centre, strict=True)
        ]
        grids = np.meshgrid(*axes, indexing="ij", sparse=True)
        squared = sum(g**2 for g in grids)
        blob = np.exp(-np.asarray(squared, dtype=np.float32) / np.float32(2 * sigma**2))
        window = tuple(slice(a, b) for a, b in zip(low, high, strict=True))
        np.maximum(out[window], blob, out=out[window])
    return out


def deepest_point(mask: BoolArray, rng: np.random.Generator | None = None) -> Point | None:
    """The voxel of ``mask`` farthest from its border (a click at the centre of the structure).

    With ``rng``, a random voxel among those at least half as deep, as a user's click would be.
    Returns None for an empty mask.
    """
    boxes = ndimage.find_objects(mask.astype(np.uint8))
    if not boxes or boxes[0] is None:
        return None
    # The distance transform runs on the structure's bounding box only (a third of a training
    # step's time went into transforms of the whole crop); a one-voxel empty ring keeps it exact,
    # since every voxel outside the box is background and farther than the ring.
    box = boxes[0]
    offset = np.asarray([part.start for part in box])
    depth = ndimage.distance_transform_edt(np.pad(mask[box], 1))[
        tuple(slice(1, -1) for _ in mask.shape)
    ]
    if rng is None:
        best = np.unravel_index(int(np.argmax(depth)), depth.shape)
        return tuple(int(v) for v in np.asarray(best) + offset)
    candidates = np.argwhere(depth >= 0.5 * depth.max())
    return tuple(int(v) for v in candidates[rng.integers(len(candidates))] + offset)


@dataclass(frozen=True)
class Click:
    """A simulated click: where, and whether it marks foreground."""

    point: Point
    foreground: bool


def corrective_click(
    truth: BoolArray, prediction: BoolArray, rng: np.random.Generator | None = None
) -> Click | None:
    """The click a user would make next: inside the largest wrong region.

    A missed region (false negative) gets a foreground click, a spurious one (false positive) a
    background click, at the region's deepest voxel. None when the prediction is already right.
    """
    best: tuple[int, BoolArray, bool] | None = None
    for region, foreground in ((truth & ~prediction, True), (prediction & ~truth, False)):
        labels, count = ndimage.label(region)
        if count == 0:
            continue
        sizes = np.bincount(labels.ravel())[1:]
        largest = int(np.argmax(sizes))
        if best is None or sizes[largest] > best[0]:
            best = (int(sizes[largest]), labels == largest + 1, foreground)
    if best is None:
        return None
    point = deepest_point(best[1], rng)
    assert point is not None
    return Click(point, best[2])


def extreme_points(mask: npt.NDArray[Any]) -> list[Point]:
    """The voxels of ``mask`` (non-zero) with the lowest and highest index along each axis: two per
    axis, in axis order, lowest first (a DExtr3D user's clicks); [] for an empty mask."""
    coords = np.argwhere(mask)
    if len(coords) == 0:
        return []
    points: list[Point] = []
    for axis in range(mask.ndim):
        for index in (int(np.argmin(coords[:, axis])), int(np.argmax(coords[:, axis]))):
            points.append(tuple(int(v) for v in coords[index]))
    return points


def bounding_box(mask: npt.NDArray[Any]) -> tuple[Point, Point] | None:
    """The box around the non-zero voxels of ``mask`` as ``(low, high)``: ``low`` inclusive and
    ``high`` exclusive on every axis, so ``mask[low[0]:high[0], low[1]:high[1], ...]`` holds them
    all; None for an empty mask."""
    coords = np.argwhere(mask)
    if len(coords) == 0:
        return None
    return tuple(int(v) for v in coords.min(0)), tuple(int(v) + 1 for v in coords.max(0))
