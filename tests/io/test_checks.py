"""The edge check of every decoded volume, as properties over any array and geometry: it either
answers a volume a model can take or raises ImageReadError, never anything else."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from carina.errors import ImageReadError
from carina.io import Volume
from carina.io.checks import MAX_EXTENT_MM, MAX_SPACING_MM, MIN_SPACING_MM, check_volume

DTYPES = st.sampled_from(
    ["u1", "i2", "u2", "i4", "f4", "f8", "c8", "c16", "?", "f2", "i8", "u8", "V4", "O"]
)
FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=64) | st.floats(-1e3, 1e3)


@st.composite
def volumes(draw: st.DrawFn) -> Volume:
    spatial = draw(st.sampled_from([2, 3]))
    shape = draw(st.lists(st.integers(0, 6), min_size=spatial, max_size=spatial + 2))
    dtype = np.dtype(draw(DTYPES))
    array = np.zeros(tuple(shape), dtype=dtype) if dtype.kind != "O" else np.empty(shape, object)
    affine = np.eye(4)
    affine[:3, :] = draw(hnp.arrays(np.float64, (3, 4), elements=FLOATS))
    return Volume(array=array, affine=affine, spatial_ndim=spatial)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(volumes())
def test_a_checked_volume_is_one_a_model_can_take(volume: Volume) -> None:
    try:
        checked = check_volume(volume, source="upload.nii.gz")
    except ImageReadError as exc:
        assert str(exc).startswith("upload.nii.gz: ")
        return
    assert checked.array.dtype.kind in "biuf"
    assert checked.array.ndim == checked.spatial_ndim or (
        checked.spatial_ndim == 2 and checked.array.shape[-1] in (3, 4)
    )
    assert all(n > 0 for n in checked.shape)
    assert np.all(np.isfinite(checked.affine))
    with np.errstate(all="ignore"):  # a planar image's unused third column may be huge
        spacing = checked.spacing[: checked.spatial_ndim]
    assert all(MIN_SPACING_MM <= s <= MAX_SPACING_MM for s in spacing)
    assert max(n * s for n, s in zip(checked.shape, spacing, strict=True)) <= MAX_EXTENT_MM


@pytest.mark.parametrize(
    ("array", "affine", "reason"),
    [
        (np.zeros((4, 4, 4), np.complex64), np.eye(4), "complex-valued"),
        (np.zeros((4, 4, 4, 2)), np.eye(4), "axes beyond"),
        (np.zeros((4, 4, 4)), np.diag([0.001, 1, 1, 1]), "voxel size"),
        (np.zeros((4, 4, 4)), np.diag([1, 1, np.inf, 1]), "not usable"),
        (np.zeros((4, 4, 4)), np.diag([1, 1, 0, 1]), "not usable"),
        (np.zeros((4, 4, 60)), np.diag([1, 1, 99, 1]), "spans"),
        (np.zeros((4, 0, 4)), np.eye(4), "no voxels"),
    ],
)
def test_what_is_refused_is_named(array: Any, affine: Any, reason: str) -> None:
    with pytest.raises(ImageReadError, match=reason):
        check_volume(Volume(array=array, affine=affine), source="x.nii")


def test_trailing_single_axes_are_dropped_and_colour_pictures_kept() -> None:
    volume = check_volume(Volume(array=np.zeros((4, 4, 4, 1, 1)), affine=np.eye(4)), source="x")
    assert volume.array.shape == (4, 4, 4)
    picture = Volume(array=np.zeros((4, 4, 3), np.uint8), affine=np.eye(4), spatial_ndim=2)
    assert check_volume(picture, source="x.png").array.shape == (4, 4, 3)
