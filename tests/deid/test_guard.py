"""The PHI guard's look at files and names: DICOM (a file, a zip), NIfTI text fields and
extensions, NRRD and MetaImage headers, image ids and file names; broken files are left to their
readers; ``deid-on-ingest`` rewrites each kind so that nothing is found after."""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from carina.data import locate_sample
from carina.deid.guard import deidentify_file, file_findings, name_findings, sniff
from carina.io import load_volume

MAX = 1 << 30


def tags(path: Path) -> set[str]:
    return {f.tag for f in file_findings(path, max_bytes=MAX)}


@pytest.fixture
def identified_slice(phi_series: Path) -> Path:
    return sorted(phi_series.iterdir())[0]


def test_dicom_file_and_zip(identified_slice: Path, tmp_path: Path) -> None:
    assert sniff(identified_slice) == "dicom"
    assert {"PatientName", "PatientID", "PatientIdentityRemoved"} <= tags(identified_slice)
    packed = tmp_path / "series.zip"
    with zipfile.ZipFile(packed, "w") as archive:
        archive.write(identified_slice, "a/IM000001")
    assert sniff(packed) == "zip" and "PatientName" in tags(packed)


def test_nifti_text_fields_and_extensions(identified_slice: Path, tmp_path: Path) -> None:
    image = nib.load(locate_sample("spine_ct_vertebrae"))
    assert tags(locate_sample("spine_ct_vertebrae")) == set()
    image.header["aux_file"] = b"Doe^Jane"
    dicom = pydicom.dcmread(identified_slice, stop_before_pixels=True)
    del dicom.file_meta  # a DICOM extension holds the dataset alone
    image.header.extensions.append(nib.nifti1.Nifti1DicomExtension(2, dicom))
    image.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"call 555-867-5309"))
    nib.save(image, tmp_path / "label.nii.gz")
    found = tags(tmp_path / "label.nii.gz")
    assert "NIfTI aux_file" in found and "NIfTI extension" in found
    assert "NIfTI DICOM extension>PatientName" in found


def test_nrrd_and_metaimage_headers(tmp_path: Path) -> None:
    nrrd = tmp_path / "x.nrrd"
    nrrd.write_bytes(
        b"NRRD0004\ntype: uint8\ndimension: 1\nsizes: 2\nencoding: raw\n"
        b"DICOM.PatientName:=Doe^Jane\nSegment0_Name:=L2\n\n\x00\x01"
    )
    assert {f.tag for f in file_findings(nrrd, max_bytes=MAX)} == {"header DICOM.PatientName"}
    mha = tmp_path / "x.mha"
    mha.write_bytes(
        b"ObjectType = Image\nNDims = 1\nDimSize = 24\nPatientID = 12345678\n"
        b"ElementType = MET_UCHAR\nElementDataFile = LOCAL\n" + b"Doe^Jane 555-867-5309 1234567"
    )
    assert tags(mha) == {"header PatientID"}, "the pixel bytes after the header are not text"


def test_names() -> None:
    for clean in ("spine ct", "1.2.840.113619.2.55.3.604688119", "IM000123", "2024-03-01 scan"):
        assert name_findings(clean, "file name") == [], clean
    for identifying in ("Doe^Jane", "jane.doe@example.org", "MRN 88765432", "123-45-6789"):
        assert name_findings(identifying, "image id"), identifying


def test_broken_files_are_left_to_their_readers(tmp_path: Path) -> None:
    gz = tmp_path / "broken.nii.gz"
    gz.write_bytes(gzip.compress(b"\0" * 400)[:30])
    zipped = tmp_path / "broken.zip"
    zipped.write_bytes(b"PK\x03\x04 not a zip")
    assert tags(gz) == set() and tags(zipped) == set()


def test_deid_on_ingest_leaves_nothing_to_find(identified_slice: Path, tmp_path: Path) -> None:
    key = bytes(range(32))
    single = tmp_path / "part00001"
    single.write_bytes(identified_slice.read_bytes())
    deidentify_file(single, key, max_bytes=MAX)
    assert tags(single) == set()
    packed = tmp_path / "part00002"
    with zipfile.ZipFile(packed, "w") as archive:
        archive.write(identified_slice, "IM1")
        archive.writestr("notes.txt", "Doe^Jane")
    deidentify_file(packed, key, max_bytes=MAX)
    assert tags(packed) == set()
    assert zipfile.ZipFile(packed).namelist() == ["00000.dcm"], "only DICOM objects are kept"

    image = nib.load(locate_sample("spine_ct_vertebrae"))
    image.header["descrip"] = b"Doe^Jane"
    nifti = tmp_path / "part00003"
    nib.save(image, tmp_path / "named.nii.gz")
    nifti.write_bytes((tmp_path / "named.nii.gz").read_bytes())
    deidentify_file(nifti, key, max_bytes=MAX)
    assert tags(nifti) == set()
    before = load_volume(locate_sample("spine_ct_vertebrae"))
    after = load_volume(nifti.rename(tmp_path / "after.nii.gz"))
    assert np.array_equal(before.array, after.array) and np.allclose(before.affine, after.affine)


def test_a_header_longer_than_the_first_read_is_read_whole(
    identified_slice: Path, tmp_path: Path
) -> None:
    ds = pydicom.dcmread(identified_slice)
    ds.private_block(0x0019, "PADDING", create=True).add_new(0x01, "OB", b"\0" * 200_000)
    ds.ImageComments = "call 555-867-5309"  # (0020,4000): after the long private block
    for keyword in ("PatientName", "PatientID"):
        delattr(ds, keyword)
    ds.save_as(tmp_path / "long.dcm")
    packed = tmp_path / "long.zip"
    with zipfile.ZipFile(packed, "w") as archive:
        archive.write(tmp_path / "long.dcm", "IM1")
    assert "ImageComments" in tags(packed)
