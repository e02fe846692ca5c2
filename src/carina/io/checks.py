"""The checks every image a server receives passes before anything works on it.

A reader turns bytes into a :class:`Volume`; this decides whether that volume is something an
annotation model can work on: voxels of a plain numeric type, one 2D or 3D image (no time or
channel axes, colour only in a planar image), a usable geometry (finite, invertible, with a
voxel size and an extent in sane bounds, so that no later resampling or window explodes).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from carina.errors import ImageReadError
from carina.io.volume import Volume

#: Voxel sizes accepted, in millimetres: from high-resolution micro-CT to thick MR slices.
MIN_SPACING_MM = 0.01
MAX_SPACING_MM = 100.0
#: The largest extent of an image along one axis, in millimetres (a whole body is about 2 m).
MAX_EXTENT_MM = 5000.0


def check_volume(volume: Volume, *, source: str | Path) -> Volume:
    """``volume`` when a model can work on it (trailing axes of size 1 dropped).

    Raises:
        ImageReadError: naming ``source`` and what is wrong: the voxel type, the axes, or the
            geometry.
    """
    kind = volume.array.dtype.kind
    if kind not in "biuf" or volume.array.dtype.names:
        what = "complex-valued" if kind == "c" else f"{volume.array.dtype} (not numeric)"
        raise ImageReadError(source, f"voxels of type {what} cannot be segmented")
    volume = _single_image(volume, source)
    if any(n == 0 for n in volume.shape):
        raise ImageReadError(source, f"the image has no voxels (shape {list(volume.shape)})")
    affine = volume.affine
    with np.errstate(all="ignore"):  # huge values overflow to inf, refused just below
        usable = np.all(np.isfinite(affine)) and abs(np.linalg.det(affine[:3, :3])) >= 1e-12
        spacing = volume.spacing[: volume.spatial_ndim]
    if not usable or not all(np.isfinite(spacing)):
        raise ImageReadError(source, "the geometry (spacing, direction, origin) is not usable")
    if not all(MIN_SPACING_MM <= s <= MAX_SPACING_MM for s in spacing):
        shown = ", ".join(f"{s:g}" for s in spacing)
        raise ImageReadError(
            source,
            f"voxel size {shown} mm is outside {MIN_SPACING_MM:g}-{MAX_SPACING_MM:g} mm",
        )
    extent = [n * s for n, s in zip(volume.shape, spacing, strict=True)]
    if max(extent) > MAX_EXTENT_MM:
        raise ImageReadError(
            source, f"the image spans {max(extent):.0f} mm, over {MAX_EXTENT_MM:g} mm"
        )
    return volume


def _single_image(volume: Volume, source: str | Path) -> Volume:
    """The volume without trailing axes of size 1; a planar image may keep a colour axis."""
    array = volume.array
    extra = array.shape[volume.spatial_ndim :]
    if all(n == 1 for n in extra):
        if extra:
            array = array.reshape(array.shape[: volume.spatial_ndim])
            return dataclasses.replace(volume, array=array)
        return volume
    if volume.spatial_ndim == 2 and len(extra) == 1 and extra[0] in (3, 4):
        return volume  # RGB or RGBA picture
    shape = "x".join(str(n) for n in array.shape)
    raise ImageReadError(
        source,
        f"an image of shape {shape} has axes beyond the {volume.spatial_ndim} spatial ones "
        "(time, channels or colour); send one greyscale 2D or 3D image",
    )
