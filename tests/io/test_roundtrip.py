"""Geometry round trips for every written format, checked against nibabel and SimpleITK."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from carina.data import Case
from carina.io import ImageFormat, Volume, load_volume, save_volume
from carina.io.nifti import nifti_header_geometry
from carina.io.volume import LPS_TO_RAS
from tests.conftest import oblique_affine

FORMATS = [".nii.gz", ".nii", ".nrrd", ".mha"]


def sitk_reading(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """SimpleITK's array (transposed to [i, j, k]) and its RAS affine, computed independently."""
    image = sitk.ReadImage(str(path))
    ndim = image.GetDimension()
    direction = np.array(image.GetDirection()).reshape(ndim, ndim)
    lps = np.eye(4)
    lps[:ndim, :ndim] = direction @ np.diag(image.GetSpacing())
    lps[:ndim, 3] = image.GetOrigin()
    return sitk.GetArrayFromImage(image).transpose(), LPS_TO_RAS @ lps


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.uint8])
def test_round_trip_matches_simpleitk_and_nibabel(
    tmp_path: Path, synthetic: Case, suffix: str, dtype: type
) -> None:
    array = (synthetic.image.array * 100).astype(dtype)
    volume = Volume(array=array, affine=oblique_affine())
    path = tmp_path / f"image{suffix}"
    save_volume(volume, path)

    loaded = load_volume(path)
    assert loaded.array.dtype == array.dtype
    np.testing.assert_array_equal(loaded.array, array)
    np.testing.assert_allclose(loaded.affine, volume.affine, atol=1e-5)

    sitk_array, sitk_affine = sitk_reading(path)
    np.testing.assert_array_equal(loaded.array, sitk_array)
    np.testing.assert_allclose(loaded.affine, sitk_affine, atol=1e-5)
    if suffix.startswith(".nii"):
        reference = nib.load(path)
        np.testing.assert_allclose(loaded.affine, reference.affine, atol=1e-5)
        np.testing.assert_array_equal(loaded.array, np.asanyarray(reference.dataobj))


@pytest.mark.parametrize("suffix", FORMATS)
def test_real_ct_round_trip(tmp_path: Path, spine_ct: Volume, suffix: str) -> None:
    path = tmp_path / f"ct{suffix}"
    save_volume(spine_ct, path)
    loaded = load_volume(path)
    np.testing.assert_array_equal(loaded.array, spine_ct.array)
    np.testing.assert_allclose(loaded.affine, spine_ct.affine, atol=1e-5)
    assert loaded.axis_codes == ("P", "I", "R")


def test_nifti_reading_matches_nibabel_on_shipped_file(
    spine_ct_path: Path, spine_ct: Volume
) -> None:
    reference = nib.load(spine_ct_path)
    np.testing.assert_array_equal(spine_ct.array, np.asanyarray(reference.dataobj))
    np.testing.assert_allclose(spine_ct.affine, reference.affine, atol=1e-6)
    assert spine_ct.spacing == pytest.approx((1.5, 1.5, 1.5))
    assert spine_ct.meta.format == ImageFormat.NIFTI


def test_nifti_label_map_is_geometry_identical_to_its_image(
    tmp_path: Path, spine_ct_path: Path, spine_ct: Volume
) -> None:
    label = spine_ct.with_array((spine_ct.array > 200).astype(np.uint8))
    save_volume(label, tmp_path / "label.nii.gz")
    written = load_volume(tmp_path / "label.nii.gz")
    source = load_volume(spine_ct_path)
    assert written.meta.nifti_header is not None and source.meta.nifti_header is not None
    assert nifti_header_geometry(written.meta.nifti_header) == nifti_header_geometry(
        source.meta.nifti_header
    )
    assert written.array.dtype == np.uint8
    assert np.array_equal(written.affine, source.affine)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_itk_label_map_is_geometry_identical_to_its_image(
    tmp_path: Path, synthetic: Case, suffix: str
) -> None:
    image_path = tmp_path / f"image{suffix}"
    reference = sitk.GetImageFromArray(synthetic.image.array.transpose().copy())
    reference.SetOrigin((-10.123456789012345, 3.3333333333333335, 7.0000000000001))
    reference.SetSpacing((0.3333333333333333, 0.7, 1.1))
    theta = 0.3
    reference.SetDirection(
        (np.cos(theta), -np.sin(theta), 0.0, np.sin(theta), np.cos(theta), 0.0, 0.0, 0.0, 1.0)
    )
    sitk.WriteImage(reference, str(image_path))
    image = load_volume(image_path)
    save_volume(image.with_array(synthetic.label.array), tmp_path / f"label{suffix}")
    label = sitk.ReadImage(str(tmp_path / f"label{suffix}"))
    source = sitk.ReadImage(str(image_path))
    assert label.GetOrigin() == source.GetOrigin()
    assert label.GetSpacing() == source.GetSpacing()
    assert label.GetDirection() == source.GetDirection()


def test_nifti_scaling_big_endian_and_4d(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    data = rng.integers(-100, 100, (8, 9, 10, 2)).astype(">i2")
    image = nib.Nifti1Image(data, oblique_affine())
    image.header.set_data_dtype(">i2")
    image.header.set_slope_inter(0.5, 10.0)
    nib.save(image, tmp_path / "scaled.nii")
    loaded = load_volume(tmp_path / "scaled.nii")
    expected = nib.load(tmp_path / "scaled.nii").get_fdata()
    assert loaded.array.dtype == np.float32 and loaded.array.shape == (8, 9, 10, 2)
    np.testing.assert_allclose(loaded.array, expected, rtol=1e-6)
    assert loaded.shape == (8, 9, 10)


def test_nifti2_is_read(tmp_path: Path, synthetic: Case) -> None:
    nib.save(nib.Nifti2Image(synthetic.label.array, oblique_affine()), tmp_path / "two.nii.gz")
    loaded = load_volume(tmp_path / "two.nii.gz")
    np.testing.assert_array_equal(loaded.array, synthetic.label.array)
    np.testing.assert_allclose(loaded.affine, oblique_affine(), atol=1e-5)


def test_format_is_sniffed_without_suffix(tmp_path: Path, synthetic: Case) -> None:
    save_volume(synthetic.label, tmp_path / "label.nii.gz")
    (tmp_path / "label.nii.gz").rename(tmp_path / "upload")
    loaded = load_volume(tmp_path / "upload")
    np.testing.assert_array_equal(loaded.array, synthetic.label.array)


def test_png_round_trip_uses_column_row_order(tmp_path: Path) -> None:
    array = np.arange(6 * 4, dtype=np.uint8).reshape(6, 4)  # 6 columns (i), 4 rows (j)
    save_volume(Volume(array=array, affine=np.eye(4), spatial_ndim=2), tmp_path / "mask.png")
    with Image.open(tmp_path / "mask.png") as image:
        assert image.size == (6, 4)
        np.testing.assert_array_equal(np.asarray(image), array.T)
    loaded = load_volume(tmp_path / "mask.png")
    assert loaded.spatial_ndim == 2 and loaded.shape == (6, 4)
    np.testing.assert_array_equal(loaded.array, array)


def test_rgb_jpeg_has_trailing_channels(tmp_path: Path) -> None:
    pixels = np.zeros((10, 20, 3), dtype=np.uint8)
    pixels[:, :10, 0] = 255
    Image.fromarray(pixels).save(tmp_path / "photo.jpg", quality=95)
    loaded = load_volume(tmp_path / "photo.jpg")
    assert loaded.array.shape == (20, 10, 3)
    assert loaded.array[2, 5, 0] > 200 and loaded.array[15, 5, 0] < 50


def test_crop_keeps_world_positions(spine_ct: Volume) -> None:
    half = spine_ct.crop(2, 36, 73)
    np.testing.assert_allclose(
        half.affine @ [0, 0, 0, 1], spine_ct.affine @ [0, 0, 36, 1], atol=1e-9
    )
    np.testing.assert_array_equal(half.array, spine_ct.array[:, :, 36:])
