"""DICOM reading: a real CT series in shuffled order, zips, enhanced multi-frame, compression."""

from __future__ import annotations

import random
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from carina.data import locate_sample
from carina.io import ImageFormat, Volume, load_volume
from tests.io.test_roundtrip import LPS_TO_RAS


def shuffled_copy(series: Path, target: Path, seed: int = 3) -> Path:
    """The series' files under new names whose sorted order is a random permutation of slices."""
    files = sorted(series.iterdir())
    order = list(range(len(files)))
    random.Random(seed).shuffle(order)
    target.mkdir()
    for new_index, file in zip(order, files, strict=True):
        shutil.copy(file, target / f"IM{new_index:04d}")
    return target


def test_series_in_shuffled_order_matches_source(
    tmp_path: Path, ct_series: Path, spine_ct: Volume
) -> None:
    folder = shuffled_copy(ct_series, tmp_path / "shuffled")
    loaded = load_volume(folder)
    assert loaded.meta.format == ImageFormat.DICOM and loaded.meta.modality == "CT"
    assert loaded.array.dtype == np.int16
    np.testing.assert_array_equal(loaded.array, spine_ct.array)
    np.testing.assert_allclose(loaded.affine, spine_ct.affine, atol=1e-5)


def test_series_matches_simpleitk(ct_series: Path) -> None:
    loaded = load_volume(ct_series)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(ct_series)))
    image = reader.Execute()
    np.testing.assert_array_equal(loaded.array, sitk.GetArrayFromImage(image).transpose())
    lps = np.eye(4)
    lps[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    np.testing.assert_allclose(loaded.affine, LPS_TO_RAS @ lps, atol=1e-5)


def test_zip_of_series_with_a_wrapping_folder(
    tmp_path: Path, ct_series: Path, spine_ct: Volume
) -> None:
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        for file in ct_series.iterdir():
            out.write(file, f"export/CT/{file.name}")
        out.writestr("export/README.txt", "not a DICOM file")
    loaded = load_volume(archive)
    np.testing.assert_array_equal(loaded.array, spine_ct.array)
    np.testing.assert_allclose(loaded.affine, spine_ct.affine, atol=1e-5)


def test_single_slice_applies_rescale() -> None:
    path = locate_sample("dicom_ct_slice")
    dataset = pydicom.dcmread(path)
    expected = pydicom.pixels.apply_rescale(dataset.pixel_array, dataset)
    loaded = load_volume(path)
    assert loaded.shape == (128, 128, 1)
    np.testing.assert_array_equal(loaded.array[:, :, 0], expected.T)
    row_spacing, column_spacing = (float(v) for v in dataset.PixelSpacing)
    assert loaded.spacing[:2] == pytest.approx((column_spacing, row_spacing))
    position = np.array([float(v) for v in dataset.ImagePositionPatient])
    np.testing.assert_allclose(loaded.origin, position * [-1, -1, 1])


@pytest.mark.parametrize(
    "variant",
    [
        "dicom_enhanced_mr_rle",
        "dicom_enhanced_mr_jpeg2000",
        "dicom_enhanced_mr_jpegls",
        "dicom_enhanced_mr_big_endian",
    ],
)
def test_enhanced_multiframe_mr_and_compressed_variants(variant: str) -> None:
    reference = load_volume(locate_sample("dicom_enhanced_mr"))
    assert reference.shape == (64, 64, 10)
    frames = pydicom.dcmread(locate_sample("dicom_enhanced_mr")).pixel_array
    np.testing.assert_array_equal(reference.array, frames.transpose(2, 1, 0))
    loaded = load_volume(locate_sample(variant))
    assert loaded.array.dtype.isnative
    np.testing.assert_array_equal(loaded.array, reference.array)


@pytest.mark.parametrize(
    "variant", ["dicom_mr_slice_jpeg2000", "dicom_mr_slice_jpegls", "dicom_mr_slice_rle"]
)
def test_compressed_single_slices(variant: str) -> None:
    reference = load_volume(locate_sample("dicom_mr_slice"))
    loaded = load_volume(locate_sample(variant))
    np.testing.assert_array_equal(loaded.array, reference.array)
    np.testing.assert_allclose(loaded.affine, reference.affine)


def test_enhanced_ct_frames_use_functional_group_geometry() -> None:
    path = locate_sample("dicom_enhanced_ct")
    dataset = pydicom.dcmread(path)
    loaded = load_volume(path)
    assert loaded.shape == (512, 512, 2)
    transform = dataset.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
    frames = dataset.pixel_array * float(transform.RescaleSlope) + float(transform.RescaleIntercept)
    for index, group in enumerate(dataset.PerFrameFunctionalGroupsSequence):
        position = np.array([float(v) for v in group.PlanePositionSequence[0].ImagePositionPatient])
        ras = position * [-1, -1, 1]
        k = [int(k) for k in range(2) if np.allclose(loaded.affine @ [0, 0, k, 1], [*ras, 1])]
        assert len(k) == 1, f"frame {index} is not on a slice of the grid"
        np.testing.assert_array_equal(loaded.array[:, :, k[0]], frames[index].T)


def test_legacy_multiframe_dose_uses_frame_offsets() -> None:
    path = locate_sample("dicom_rt_dose")
    dataset = pydicom.dcmread(path)
    loaded = load_volume(path)
    offsets = [float(v) for v in dataset.GridFrameOffsetVector]
    assert loaded.shape[2] == int(dataset.NumberOfFrames)
    assert loaded.spacing[2] == pytest.approx(abs(offsets[1] - offsets[0]))
    expected = dataset.pixel_array[0].T * float(dataset.DoseGridScaling)
    k0 = 0 if loaded.affine[2, 2] * (offsets[1] - offsets[0]) > 0 else loaded.shape[2] - 1
    np.testing.assert_allclose(loaded.array[:, :, k0], expected, rtol=1e-6)
