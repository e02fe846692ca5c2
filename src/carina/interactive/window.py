"""The region an interactive model looks at: a box in the image, resized to the network's input.

A :class:`Window` maps between the full image and the network's region of interest (ROI): it
extracts the box (padding where it leaves the image) and resizes it to the ROI, maps points into
ROI coordinates, and pastes a prediction back at full resolution as a mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Window:
    """A box of ``size`` voxels starting at ``start`` (may leave the image), seen at ``roi``."""

    start: tuple[int, ...]
    size: tuple[int, ...]
    roi: tuple[int, ...]

    @classmethod
    def around(
        cls,
        low: npt.ArrayLike,
        high: npt.ArrayLike,
        roi: Sequence[int],
        *,
        margin: npt.ArrayLike,
        min_size: npt.ArrayLike | None = None,
        shift: npt.ArrayLike | None = None,
    ) -> Window:
        """The box ``[low, high)`` grown by ``margin`` on each side, at least ``min_size``.

        Args:
            low, high: the box to contain (voxel indices, high exclusive).
            roi: the network input size.
            margin: voxels added on each side, per axis.
            min_size: the smallest box (default: none); DeepGrow uses the ROI, so that small
                structures are seen at full resolution.
            shift: a displacement of the centre in voxels (training jitter).
        """
        low_a, high_a = np.asarray(low, np.float64), np.asarray(high, np.float64)
        size = np.ceil(high_a - low_a + 2 * np.asarray(margin, np.float64))
        if min_size is not None:
            size = np.maximum(size, np.asarray(min_size, np.float64))
        size = np.maximum(size, 1)
        centre = (low_a + high_a) / 2 + (np.asarray(shift) if shift is not None else 0)
        start = np.floor(centre - size / 2)
        return cls(
            tuple(int(v) for v in start), tuple(int(v) for v in size), tuple(int(v) for v in roi)
        )

    @property
    def scale(self) -> npt.NDArray[np.float64]:
        """ROI voxels per image voxel, per axis."""
        return np.asarray(self.roi, np.float64) / np.asarray(self.size, np.float64)

    def to_roi(self, points: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Image voxel indices as (fractional) ROI voxel indices."""
        array = np.asarray(points, dtype=np.float64).reshape(-1, len(self.roi))
        mapped: npt.NDArray[np.float64] = (array - np.asarray(self.start) + 0.5) * self.scale - 0.5
        return mapped

    def extract(
        self, array: torch.Tensor, *, mode: str = "trilinear", fill: float | None = 0.0
    ) -> torch.Tensor:
        """The window of a channel-first array ``(C, *spatial)``, resized to ``(C, *roi)``.

        Where the window leaves the image it holds ``fill``; None fills with the minimum of what
        the window holds of the image (for CT, air rather than water).
        """
        in_image, in_window = self._overlap(array.shape[1:])
        inside = array[(slice(None), *in_image)].float()
        if fill is None:
            fill = float(inside.min()) if inside.numel() else 0.0
        box = array.new_full((array.shape[0], *self.size), fill, dtype=torch.float32)
        box[(slice(None), *in_window)] = inside
        if tuple(self.size) == tuple(self.roi):
            return box
        return _resize(box, self.roi, mode)

    def paste_mask(
        self, probability: torch.Tensor, shape: Sequence[int], *, threshold: float = 0.5
    ) -> npt.NDArray[np.uint8]:
        """A ``roi``-sized probability map, resized back, thresholded, in a zero uint8 ``shape``.

        Only the window is resized and thresholded; the rest of the mask is zeros, so the cost
        does not grow with the image.
        """
        box = probability.float()[None]
        if tuple(self.size) != tuple(self.roi):
            box = _resize(box, self.size, "trilinear")
        mask = np.zeros(tuple(shape), dtype=np.uint8)
        in_image, in_window = self._overlap(shape)
        mask[tuple(in_image)] = (box[0][tuple(in_window)] > threshold).numpy()
        return mask

    def grown(
        self,
        probability: torch.Tensor,
        shape: Sequence[int],
        *,
        centre: npt.ArrayLike,
        border: float,
        limit: npt.ArrayLike,
        threshold: float = 0.5,
    ) -> Window | None:
        """A larger window, when the mask of this one's ``roi``-sized ``probability`` comes within
        ``border`` image voxels of an edge that lies inside the image (the structure may go on
        beyond it); None when it does not, or the window cannot grow.

        The window grows by one factor on every axis (the model sees the same shape, only
        coarser), still centred on ``centre``, enough to hold the mask plus ``border`` on the
        side that reached the edge, at most ``limit`` voxels per axis.
        """
        inside = torch.nonzero(probability > threshold)
        if not len(inside):
            return None
        start = np.asarray(self.start, np.float64)
        size = np.asarray(self.size, np.float64)
        low = start + inside.min(0).values.numpy() / self.scale
        high = start + (inside.max(0).values.numpy() + 1) / self.scale
        middle = np.asarray(centre, np.float64)
        factor = 1.0
        for axis, length in enumerate(shape):
            near_low = low[axis] - start[axis] < border and start[axis] > 0
            near_high = start[axis] + size[axis] - high[axis] < border
            near_high = near_high and start[axis] + size[axis] < length
            if near_low or near_high:
                half = max(middle[axis] - low[axis], high[axis] - middle[axis]) + border
                factor = max(factor, 2 * half / size[axis])
        factor = min(factor, float(np.min(np.asarray(limit, np.float64) / size)))
        if factor < 1.05:
            return None
        return Window.around(
            middle, middle + 1, self.roi, margin=[0] * len(size), min_size=np.ceil(size * factor)
        )

    def clipped(self, shape: Sequence[int]) -> list[list[int]]:
        """The window's part inside the image as ``[[i0, i1], [j0, j1], ...]`` (half-open)."""
        return [[part.start, part.stop] for part in self._overlap(shape)[0]]

    def _overlap(self, shape: Sequence[int]) -> tuple[list[slice], list[slice]]:
        """Where window and image overlap, as slices of the image and of the window."""
        in_image, in_window = [], []
        for start, size, length in zip(self.start, self.size, shape, strict=True):
            low, high = max(start, 0), max(min(start + size, length), max(start, 0))
            in_image.append(slice(low, high))
            in_window.append(slice(low - start, high - start))
        return in_image, in_window


def deepgrow_window(
    clicks: np.ndarray[Any, Any],
    roi: Sequence[int],
    *,
    window_mm: float,
    spacing: np.ndarray[Any, Any],
    margin: float = 0.0,
    shift: np.ndarray[Any, Any] | None = None,
    size: Sequence[int] | None = None,
) -> Window:
    """The DeepGrow window: a cube of ``window_mm`` (or ``size`` voxels) centred on the first
    click, grown per axis, still centred there, until every click lies ``margin`` voxels inside.

    Training centres the window on the one simulated first click, so inference keeps it there:
    re-centring on all the clicks would move the structure off the centre the model has learnt
    (a corrective click at the tip of a process shifted it by a quarter of the window).
    """
    first = clicks[0]
    base = np.asarray(size, np.float64) if size is not None else window_mm / spacing
    spread = np.abs(clicks - first).max(0)
    return Window.around(
        first,
        first + 1,
        roi,
        margin=[margin] * len(roi),
        min_size=np.maximum(base, 2 * (spread + margin) + 1),
        shift=shift,
    )


def _resize(array: torch.Tensor, size: Sequence[int], mode: str) -> torch.Tensor:
    spatial = len(size)
    if mode == "trilinear" and spatial == 2:
        mode = "bilinear"
    kwargs = {"align_corners": False} if mode in ("trilinear", "bilinear") else {}
    batch = array.float().unsqueeze(0)
    return F.interpolate(batch, size=tuple(int(s) for s in size), mode=mode, **kwargs)[0]
