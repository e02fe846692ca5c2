"""Every bad input raises ImageReadError naming the file and what is wrong; nothing is written."""

from __future__ import annotations

import gzip
import shutil
import stat
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from carina.data import Case, locate_sample
from carina.errors import CarinaError, ImageReadError, ImageWriteError
from carina.io import Volume, load_volume, save_volume

NIFTI_HEADER = 352


def read_error(path: Path, **kwargs: int) -> str:
    with pytest.raises(ImageReadError) as caught:
        load_volume(path, **kwargs)
    message = str(caught.value)
    assert path.name in message
    assert str(path.parent) not in message, "messages must not leak folders"
    return message


def test_unknown_suffix(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello, not an image")
    assert "unknown image format" in read_error(path)


def test_missing_file(tmp_path: Path) -> None:
    assert "no such file" in read_error(tmp_path / "absent.nii.gz")


@pytest.mark.parametrize(
    "name", ["empty.nii.gz", "empty.nii", "empty.dcm", "empty.nrrd", "empty.png"]
)
def test_empty_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"")
    message = read_error(path)
    assert "empty" in message or "not a" in message


def test_truncated_nifti(tmp_path: Path, synthetic: Case) -> None:
    save_volume(synthetic.image, tmp_path / "full.nii")
    data = (tmp_path / "full.nii").read_bytes()
    (tmp_path / "cut.nii").write_bytes(data[: NIFTI_HEADER + 1000])
    assert "truncated" in read_error(tmp_path / "cut.nii")
    (tmp_path / "cut.nii.gz").write_bytes(gzip.compress(data[: NIFTI_HEADER + 1000]))
    assert "truncated" in read_error(tmp_path / "cut.nii.gz")
    (tmp_path / "head.nii.gz").write_bytes(gzip.compress(data)[:200])
    assert "truncated" in read_error(tmp_path / "head.nii.gz")


def test_corrupt_gzip(tmp_path: Path, synthetic: Case) -> None:
    save_volume(synthetic.image, tmp_path / "image.nii.gz")
    data = bytearray((tmp_path / "image.nii.gz").read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)
    (tmp_path / "corrupt.nii.gz").write_bytes(bytes(data))
    assert "corrupt" in read_error(tmp_path / "corrupt.nii.gz")


def test_non_invertible_nifti_affine(tmp_path: Path) -> None:
    header = nib.Nifti1Header()
    header.set_data_shape((4, 4, 4))
    header.set_data_dtype(np.uint8)
    header["sform_code"] = 1
    header["srow_x"], header["srow_y"], header["srow_z"] = [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]
    (tmp_path / "flat.nii").write_bytes(header.binaryblock + bytes(4) + bytes(64))
    assert "not invertible" in read_error(tmp_path / "flat.nii")


def test_nifti_decompression_bomb_is_refused_before_allocation(tmp_path: Path) -> None:
    header = nib.Nifti1Header()
    header.set_data_shape((4096, 4096, 4096))
    header.set_data_dtype(np.float32)
    raw = header.binaryblock + b"\0" * 4
    (tmp_path / "bomb.nii.gz").write_bytes(gzip.compress(raw))
    assert "over the limit" in read_error(tmp_path / "bomb.nii.gz")


def test_decompression_limit_is_configurable(tmp_path: Path, synthetic: Case) -> None:
    save_volume(synthetic.image, tmp_path / "image.mha")
    assert "over the limit" in read_error(tmp_path / "image.mha", max_bytes=1000)
    save_volume(synthetic.label, tmp_path / "label.nii.gz")
    assert "over the limit" in read_error(tmp_path / "label.nii.gz", max_bytes=1000)


def test_dicom_series_over_the_limit_is_refused_before_decoding(ct_series: Path) -> None:
    message = read_error(ct_series, max_bytes=100_000)
    assert "over the limit of 100000" in message


def test_invalid_itk_header(tmp_path: Path) -> None:
    (tmp_path / "bad.nrrd").write_text("NRRD0004\ntype: quux\ndimension: 3\n\n")
    assert "invalid nrrd header" in read_error(tmp_path / "bad.nrrd")


def test_garbage_png(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(50))
    assert "not a readable png" in read_error(tmp_path / "broken.png")


# --- DICOM ---------------------------------------------------------------------------------------


def test_dicom_without_pixel_data() -> None:
    assert "no pixel data" in read_error(locate_sample("dicom_rt_plan"))


def test_truncated_dicom_pixel_data(tmp_path: Path) -> None:
    data = locate_sample("dicom_mr_slice").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) - 3000])
    message = read_error(tmp_path / "cut.dcm")
    assert "pixel data" in message or "DICOM" in message


def test_folder_without_dicom(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("nothing here")
    assert "no DICOM file" in read_error(tmp_path)


def test_several_series_are_named(tmp_path: Path, ct_series: Path) -> None:
    folder = tmp_path / "mixed"
    shutil.copytree(ct_series, folder)
    uid = generate_uid()
    for file in sorted(ct_series.iterdir())[:5]:
        dataset = pydicom.dcmread(file)
        dataset.SeriesInstanceUID, dataset.SeriesDescription = uid, "scout"
        dataset.SOPInstanceUID = generate_uid()
        dataset.save_as(folder / f"scout_{file.name}")
    message = read_error(folder)
    assert "2 DICOM series" in message
    assert "'scout' (5 files)" in message and "'spine CT' (73 files)" in message
    assert uid in message


def test_missing_slice(tmp_path: Path, ct_series: Path) -> None:
    folder = tmp_path / "gap"
    shutil.copytree(ct_series, folder)
    by_position = sorted(
        folder.iterdir(), key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[0])
    )
    by_position[30].unlink()
    assert "missing slice" in read_error(folder)


def test_duplicated_slice(tmp_path: Path, ct_series: Path) -> None:
    folder = tmp_path / "dup"
    shutil.copytree(ct_series, folder)
    source = sorted(folder.iterdir())[10]
    dataset = pydicom.dcmread(source)
    dataset.SOPInstanceUID = generate_uid()
    dataset.save_as(folder / "copy.dcm")
    assert "duplicated slice" in read_error(folder)


def test_mixed_orientation(tmp_path: Path, ct_series: Path) -> None:
    folder = tmp_path / "tilt"
    shutil.copytree(ct_series, folder)
    victim = sorted(folder.iterdir())[5]
    dataset = pydicom.dcmread(victim)
    dataset.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    dataset.save_as(victim)
    assert "mixed slice orientations" in read_error(folder)


def test_mixed_size(tmp_path: Path, ct_series: Path) -> None:
    folder = tmp_path / "sizes"
    shutil.copytree(ct_series, folder)
    victim = sorted(folder.iterdir())[5]
    dataset = pydicom.dcmread(victim)
    dataset.Rows, dataset.Columns = 8, 8
    dataset.PixelData = np.zeros((8, 8), "<u2").tobytes()
    dataset.save_as(victim)
    assert "different sizes" in read_error(folder)


def test_zip_with_path_traversal(tmp_path: Path, ct_series: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.write(next(ct_series.iterdir()), "../../etc/slice.dcm")
    assert "outside the target folder" in read_error(archive)


def test_zip_with_symlink_entry(tmp_path: Path) -> None:
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as out:
        info = zipfile.ZipInfo("series/slice.dcm")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        out.writestr(info, "/etc/passwd")
    assert "symbolic link" in read_error(archive)


def test_zip_bomb(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        out.writestr("series/zeros.dcm", bytes(20_000_000))
    assert archive.stat().st_size < 100_000
    assert "exceeds the limit" in read_error(archive, max_bytes=10_000_000)


def test_zip_bomb_lying_about_its_size(tmp_path: Path) -> None:
    archive = tmp_path / "liar.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        out.writestr("series/zeros.dcm", bytes(2_000_000))
    data = bytearray(archive.read_bytes())
    declared = (2_000_000).to_bytes(4, "little")
    data = data.replace(declared, (100).to_bytes(4, "little"))  # local and central headers
    archive.write_bytes(bytes(data))
    message = read_error(archive, max_bytes=1_000_000)
    assert "exceeds the limit" in message or "corrupt zip" in message


def test_corrupt_zip(tmp_path: Path) -> None:
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04" + bytes(100))
    assert "zip" in read_error(tmp_path / "broken.zip")


# --- writing -------------------------------------------------------------------------------------


def test_failed_save_leaves_target_untouched(tmp_path: Path) -> None:
    target = tmp_path / "mask.png"
    target.write_bytes(b"previous contents")
    volume = Volume(array=np.full((4, 4), 1.5, np.float32), affine=np.eye(4), spatial_ndim=2)
    with pytest.raises(ImageWriteError, match=r"mask\.png"):
        save_volume(volume, target)
    assert target.read_bytes() == b"previous contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.png"]


def test_unsupported_output_suffix(tmp_path: Path, synthetic: Case) -> None:
    with pytest.raises(ImageWriteError, match=r"cannot write \.dcm"):
        save_volume(synthetic.image, tmp_path / "out.dcm")
    assert not list(tmp_path.iterdir())


def test_errors_share_one_base(tmp_path: Path) -> None:
    with pytest.raises(CarinaError):
        load_volume(tmp_path / "absent.nrrd")
