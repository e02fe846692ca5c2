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
        the window holds of the image (for CT, air rather than water). A linear resize reads
        only the two image planes each ROI plane interpolates, axis by axis, so its cost follows
        the ROI, not the window (a 128 mm window on a 0.2 mm CT holds most of the image); it
        computes what ``torch.nn.functional.interpolate`` (``align_corners=False``) computes.
        """
        in_image, in_window = self._overlap(array.shape[1:])
        inside = array[(slice(None), *in_image)]
        if mode in ("trilinear", "bilinear", "linear") and inside.numel():
            # axes in memory order (a NIfTI volume is Fortran-ordered): reads run along memory
            order = sorted(range(len(self.roi)), key=lambda a: -array.stride(a + 1))
            back = [order.index(a) for a in range(len(order))]
            ordered = array.permute(0, *(a + 1 for a in order))
            if fill is None:
                fill = float(inside.permute(0, *(a + 1 for a in order)).min())
            start, size, roi = (
                [values[a] for a in order] for values in (self.start, self.size, self.roi)
            )
            result = _linear_window(ordered, start, size, roi, float(fill))
            return result.permute(0, *(a + 1 for a in back))
        if fill is None:
            fill = float(inside.min()) if inside.numel() else 0.0
        box = array.new_full((array.shape[0], *self.size), fill, dtype=torch.float32)
        box[(slice(None), *in_window)] = inside.float()
        if tuple(self.size) == tuple(self.roi):
            return box
        return _resize(box, self.roi, mode)

    def paste_mask(
        self, probability: torch.Tensor, shape: Sequence[int], *, threshold: float = 0.5
    ) -> npt.NDArray[np.uint8]:
        """A ``roi``-sized probability map, resized back, thresholded, in a zero uint8 ``shape``.

        Only the part of the window inside the image and near the ROI voxels above
        ``threshold`` is resized (linearly, as ``interpolate`` does) and thresholded: a voxel
        whose interpolation taps all lie below it cannot pass it. The cost follows the mask, not
        the image or the window.
        """
        mask = np.zeros(tuple(shape), dtype=np.uint8)
        above = torch.nonzero(probability > threshold)
        if not len(above):
            return mask
        low, high = above.min(0).values.tolist(), above.max(0).values.tolist()
        region, taps = [], []
        for axis, length in enumerate(shape):
            index0, index1, weight = _taps(self.roi[axis], self.size[axis])
            near = (index1 >= low[axis]) & (index0 <= high[axis])
            image = self.start[axis] + np.arange(self.size[axis])
            keep = near & (image >= 0) & (image < length)
            if not keep.any():
                return mask
            chosen = np.flatnonzero(keep)
            region.append(slice(int(image[chosen[0]]), int(image[chosen[-1]]) + 1))
            window_part = slice(int(chosen[0]), int(chosen[-1]) + 1)
            taps.append((index0[window_part], index1[window_part], weight[window_part]))
        values = probability.float()
        for axis in reversed(range(len(shape))):
            values = _lerp(values, axis, *taps[axis])
        mask[tuple(region)] = (values > threshold).numpy()
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


def _taps(
    size_in: int, size_out: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Linear interpolation from ``size_in`` to ``size_out`` samples as ``interpolate`` with
    ``align_corners=False`` does it: per output sample, its two input samples and the weight of
    the second (float32 arithmetic, as PyTorch's)."""
    scale = np.float32(size_in) / np.float32(size_out)
    source = scale * (np.arange(size_out, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5)
    source = np.maximum(source, np.float32(0))
    index0 = np.minimum(source.astype(np.int64), size_in - 1)
    index1 = np.minimum(index0 + 1, size_in - 1)
    weight = (source - index0.astype(np.float32)).astype(np.float32)
    return index0, index1, weight


def _lerp(
    values: torch.Tensor,
    axis: int,
    index0: npt.NDArray[np.int64],
    index1: npt.NDArray[np.int64],
    weight: npt.NDArray[np.float32],
    *,
    outside: npt.NDArray[np.bool_] | None = None,
    fill: float = 0.0,
) -> torch.Tensor:
    """``values`` (float32) interpolated along ``axis`` at the given taps; taps marked
    ``outside`` read ``fill`` instead."""
    both = torch.from_numpy(np.concatenate([index0, index1]))
    planes = values.index_select(axis, both).float()
    if outside is not None and outside.any():
        where = torch.from_numpy(np.concatenate([outside[0], outside[1]]))
        view = [1] * planes.ndim
        view[axis] = len(where)
        planes = torch.where(where.view(view), torch.tensor(fill, dtype=planes.dtype), planes)
    first = planes.narrow(axis, 0, len(index0))
    second = planes.narrow(axis, len(index0), len(index1))
    view = [1] * planes.ndim
    view[axis] = len(weight)
    w1 = torch.from_numpy(weight).view(view)
    w0 = 1 - w1
    result: torch.Tensor = w0 * first + w1 * second
    return result


def _linear_window(
    array: torch.Tensor,
    start: Sequence[int],
    size: Sequence[int],
    roi: Sequence[int],
    fill: float,
) -> torch.Tensor:
    """The box ``start + [0, size)`` of a channel-first ``array`` (``fill`` outside it), resized
    linearly to ``roi``, reading only the planes the interpolation uses, one axis at a time (the
    one that shrinks most first: the arrays stay small; the sums associate in another order than
    ``interpolate``'s, equal up to float rounding)."""
    spatial = array.shape[1:]
    lows, plans = [], []
    for axis, length in enumerate(spatial):
        index0, index1, weight = _taps(size[axis], roi[axis])
        image0, image1 = start[axis] + index0, start[axis] + index1
        outside = np.stack([(image0 < 0) | (image0 >= length), (image1 < 0) | (image1 >= length)])
        used = np.clip(np.concatenate([image0, image1]), 0, length - 1)
        low, high = int(used.min()), int(used.max()) + 1
        lows.append(slice(low, high))
        local0 = np.clip(image0, 0, length - 1) - low
        local1 = np.clip(image1, 0, length - 1) - low
        plans.append((local0, local1, weight, outside))
    values = array[(slice(None), *lows)]
    shrink = [(part.stop - part.start) / out for part, out in zip(lows, roi, strict=True)]
    for axis in sorted(range(len(spatial)), key=lambda a: -shrink[a]):
        local0, local1, weight, outside = plans[axis]
        values = _lerp(values, axis + 1, local0, local1, weight, outside=outside, fill=fill)
    return values


def _resize(array: torch.Tensor, size: Sequence[int], mode: str) -> torch.Tensor:
    spatial = len(size)
    if mode == "trilinear" and spatial == 2:
        mode = "bilinear"
    kwargs = {"align_corners": False} if mode in ("trilinear", "bilinear") else {}
    batch = array.float().unsqueeze(0)
    return F.interpolate(batch, size=tuple(int(s) for s in size), mode=mode, **kwargs)[0]
