"""DICOM SEG out and in: a label map written against its source series (references, geometry,
coded segments, patient attributes from the source only) reads back equal voxel for voxel;
highdicom and dciodvfy accept it; what is not a label map, or not on the series' grid, is refused."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from carina.cli.main import app
from carina.data import locate_sample
from carina.data.dicom_series import write_dicom_series
from carina.errors import ImageReadError, ImageWriteError
from carina.io import Volume, load_volume, save_volume
from carina.io.dicom import read_series
from carina.io.dicom_seg import read_seg, segment_codes, write_seg

NAMES = ["L2", "L3", "L4"]


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped spine CT as a classic DICOM series, its patient pseudonymised."""
    folder = tmp_path_factory.mktemp("series")
    write_dicom_series(load_volume(locate_sample("spine_ct_image")), folder)
    for path in folder.iterdir():
        dataset = pydicom.dcmread(path)
        dataset.PatientName = "PSEUDO^0001"
        dataset.PatientID = "PSEUDO-0001"
        dataset.save_as(path)
    return folder


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    vertebrae = load_volume(locate_sample("spine_ct_vertebrae")).array
    array = np.zeros(vertebrae.shape, np.uint8)
    for value, original in enumerate((21, 22, 23), start=1):
        array[vertebrae == original] = value
    return array


def test_seg_references_its_series_and_reads_back_voxel_for_voxel(
    series: Path, labels: np.ndarray, tmp_path: Path
) -> None:
    volume, datasets = read_series(series, max_bytes=2**30)
    path = write_seg(volume.with_array(labels), datasets, NAMES, tmp_path / "seg.dcm")
    seg = pydicom.dcmread(path)
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert seg.FrameOfReferenceUID == datasets[0].FrameOfReferenceUID
    assert seg.StudyInstanceUID == datasets[0].StudyInstanceUID
    referenced = seg.ReferencedSeriesSequence[0]  # OHIF refuses a SEG without it
    assert referenced.SeriesInstanceUID == datasets[0].SeriesInstanceUID
    sources = {ds.SOPInstanceUID for ds in datasets}
    listed = {item.ReferencedSOPInstanceUID for item in referenced.ReferencedInstanceSequence}
    assert listed and listed <= sources
    for frame in seg.PerFrameFunctionalGroupsSequence:
        source = frame.DerivationImageSequence[0].SourceImageSequence[0]
        assert source.ReferencedSOPInstanceUID in sources
    assert [s.SegmentLabel for s in seg.SegmentSequence] == NAMES
    kinds = [s.SegmentedPropertyTypeCodeSequence[0] for s in seg.SegmentSequence]
    assert [(k.CodingSchemeDesignator, k.CodeMeaning) for k in kinds] == [
        ("SCT", "L2 vertebra"), ("SCT", "L3 vertebra"), ("SCT", "L4 vertebra"),
    ]  # fmt: skip
    assert (seg.PatientName, seg.PatientID) == ("PSEUDO^0001", "PSEUDO-0001")
    for keyword in ("PatientBirthDate", "PatientSex", "StudyDate", "StudyID", "AccessionNumber",
                    "ReferringPhysicianName", "InstitutionName"):  # fmt: skip
        assert str(seg.get(keyword, "") or "") == str(datasets[0].get(keyword, "") or ""), keyword
    back = read_seg(path, reference=volume)
    assert np.array_equal(back.array, labels)
    assert np.allclose(back.affine, volume.affine)


def test_dciodvfy_finds_no_error(series: Path, labels: np.ndarray, tmp_path: Path) -> None:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian's dicom3tools) is not installed")
    volume, datasets = read_series(series, max_bytes=2**30)
    path = write_seg(volume.with_array(labels), datasets, NAMES, tmp_path / "seg.dcm")
    checked = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    errors = [line for line in (checked.stderr + checked.stdout).splitlines() if "Error" in line]
    assert not errors, errors


def test_what_is_not_a_label_map_on_the_series_grid_is_refused(
    series: Path, labels: np.ndarray, tmp_path: Path
) -> None:
    volume, datasets = read_series(series, max_bytes=2**30)
    with pytest.raises(ImageWriteError, match="label map"):
        write_seg(volume, datasets, [], tmp_path / "image.dcm")  # the CT itself
    shifted = volume.affine.copy()
    shifted[:3, 3] += 50.0
    moved = Volume(array=labels, affine=shifted)
    with pytest.raises(ImageReadError, match="not on the grid"):
        write_seg(moved, datasets, NAMES, tmp_path / "moved.dcm")
    assert not (tmp_path / "image.dcm").exists() and not (tmp_path / "moved.dcm").exists()
    with pytest.raises(ImageReadError, match="not a readable DICOM Segmentation"):
        read_seg(next(series.iterdir()))


def test_convert_writes_and_reads_a_seg(series: Path, labels: np.ndarray, tmp_path: Path) -> None:
    volume = load_volume(series)
    save_volume(volume.with_array(labels), tmp_path / "mask.nii.gz")
    runner = CliRunner()
    written = runner.invoke(
        app,
        ["convert", str(tmp_path / "mask.nii.gz"), "--reference", str(series),
         "-o", str(tmp_path / "seg.dcm"), "--labels", ",".join(NAMES)],
    )  # fmt: skip
    assert written.exit_code == 0, written.output
    read = runner.invoke(
        app,
        ["convert", str(tmp_path / "seg.dcm"), str(tmp_path / "back.nii.gz"),
         "--reference", str(series)],
    )  # fmt: skip
    assert read.exit_code == 0, read.output
    back = load_volume(tmp_path / "back.nii.gz")
    assert np.array_equal(back.array, labels) and np.allclose(back.affine, volume.affine)
    missing = runner.invoke(app, ["convert", str(tmp_path / "mask.nii.gz"), "-o", "x.dcm"])
    assert missing.exit_code != 0 and "--reference" in missing.output
    own = load_volume(tmp_path / "seg.dcm")  # a SEG alone: the frames it holds, its own grid
    assert own.array.max() == 3 and int((own.array > 0).sum()) == int((labels > 0).sum())


@pytest.mark.parametrize(
    ("name", "meaning"),
    [("L3", "L3 vertebra"), ("c5 vertebra", "C5 vertebra"), ("grey matter", "Gray Matter"),
     ("white matter", "White Matter"), ("spleen", "Spleen"), ("lesion 7", "Tissue")],
)  # fmt: skip
def test_segments_are_coded_from_their_names(name: str, meaning: str) -> None:
    category, kind = segment_codes(name)
    assert kind.meaning == meaning and kind.scheme_designator == "SCT"
    expected = "Tissue" if meaning == "Tissue" else "Anatomical Structure"
    assert category.meaning == expected
