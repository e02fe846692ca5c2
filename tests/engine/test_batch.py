"""Batch inference for real studies: NIfTI files and folders beside DICOM series, one series chosen
from a folder of several (or all of them), a bad file skipped and reported while the batch goes on,
and a CSV of label volumes in millilitres that matches the label maps written."""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from carina.cli.main import app
from carina.data.dicom_series import write_dicom_series
from carina.engine.batch import CSV_NAME, collect_cases, label_volumes
from carina.io import Volume, load_volume
from carina.settings import DEFAULT_MAX_IMAGE_BYTES
from carina.zoo.install import zoo_archive_path

MODEL = "spine_ct_vertebrae"
LABELS = ["L2", "L3", "L4"]


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory, spine_ct_path: Path) -> Path:
    """A user's folder: a NIfTI CT, a corrupt NIfTI, a note, and a study folder holding two DICOM
    series (one per sub-folder, as a PACS export writes them)."""
    folder = tmp_path_factory.mktemp("scans")
    (folder / "ct.nii.gz").write_bytes(spine_ct_path.read_bytes())
    (folder / "broken.nii.gz").write_bytes(b"\x1f\x8b" + b"not an image" * 40)
    (folder / "notes.txt").write_text("scanned on the old CT\n")
    volume = load_volume(spine_ct_path)
    for part in ("upper", "lower"):
        (folder / "study" / part).mkdir(parents=True)
    write_dicom_series(volume.crop(2, 0, 24), folder / "study" / "upper", description="upper")
    write_dicom_series(volume.crop(2, 24, 48), folder / "study" / "lower", description="lower")
    return folder


def _uids(folder: Path) -> dict[str, str]:
    found = collect_cases([folder], series=[], max_bytes=DEFAULT_MAX_IMAGE_BYTES).series[folder]
    return {info.description: info.uid for info in found}


def test_a_folder_of_several_series_is_listed_and_skipped(scans: Path) -> None:
    batch = collect_cases([scans], series=[], max_bytes=DEFAULT_MAX_IMAGE_BYTES)
    assert sorted(case.name for case in batch.cases) == ["broken", "ct"]
    (skipped,) = batch.skipped
    assert skipped.error == "2 DICOM series: choose with --series UID (or --series all)"
    assert sorted(detail.split("'")[1] for detail in skipped.details) == ["lower", "upper"]
    assert all("(24 images) in study/" in detail for detail in skipped.details)


def test_one_series_is_chosen_by_uid_and_all_by_all(scans: Path) -> None:
    uids = _uids(scans / "study")
    one = collect_cases([scans / "study"], series=[uids["lower"]], max_bytes=1 << 30)
    assert [(c.name, c.series.uid if c.series else None) for c in one.cases] == [
        ("study_lower", uids["lower"])
    ]
    every = collect_cases([scans / "study"], series=["all"], max_bytes=1 << 30)
    assert sorted(case.name for case in every.cases) == ["study_lower", "study_upper"]
    assert all(len(case.series.files) == 24 for case in every.cases if case.series)
    missing = collect_cases([scans / "study"], series=["1.2.3.4"], max_bytes=1 << 30)
    assert not missing.cases
    assert [r.error for r in missing.skipped] == ["no input holds this series"]


def test_a_zip_of_two_series_gives_the_one_asked_for(scans: Path, tmp_path: Path) -> None:
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for file in sorted((scans / "study").rglob("*.dcm")):
            zipped.write(file, file.relative_to(scans / "study").as_posix())
    uids = _uids(scans / "study")
    batch = collect_cases([archive], series=[uids["upper"]], max_bytes=1 << 30)
    (case,) = batch.cases
    assert case.series is not None and case.series.uid == uids["upper"] and not case.series.files


def test_label_volumes_are_voxel_counts_times_the_voxel_volume() -> None:
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[:2, :5, :10] = 1  # 100 voxels
    labels[5:, 5:, 5:] = 3  # 125 voxels
    volume = Volume(labels, np.diag([0.5, 2.0, 3.0, 1.0]))  # 3 mm^3 per voxel
    assert label_volumes(volume, LABELS) == pytest.approx({"L2": 0.3, "L3": 0.0, "L4": 0.375})
    flat = Volume(labels[:, :, 0], np.eye(4), spatial_ndim=2)
    assert label_volumes(flat, LABELS) == {"L2": None, "L3": None, "L4": None}


def test_a_batch_skips_the_bad_file_and_writes_the_volumes(scans: Path, tmp_path: Path) -> None:
    uids = _uids(scans / "study")
    out = tmp_path / "out"
    done = CliRunner().invoke(
        app,
        [
            *("infer", str(zoo_archive_path(MODEL)), str(scans), "-o", str(out)),
            *("--series", uids["upper"]),
        ],
    )
    assert done.exit_code == 1, done.output  # a case was skipped: scripts can tell
    assert f"skipped {scans / 'broken.nii.gz'}: corrupt or truncated" in done.output
    assert "segmented 2 of 3; 1 skipped" in done.output
    with (out / CSV_NAME).open() as stream:
        rows = {row["case"]: row for row in csv.DictReader(stream)}
    upper = f"{scans.name}_study_upper"
    assert rows["broken"]["status"] == "skipped" and rows["broken"]["reason"]
    assert rows[upper]["series_uid"] == uids["upper"]
    for name in ("ct", upper):
        assert rows[name]["status"] == "segmented"
        written = load_volume(out / rows[name]["output"])
        expected = label_volumes(written, LABELS)
        for label in LABELS:
            assert float(rows[name][f"{label} (mL)"]) == pytest.approx(expected[label], abs=1e-3)
        assert expected["L3"] > 5.0  # a vertebra, not an empty mask
    assert load_volume(out / f"{upper}_seg.nii.gz").shape == (73, 47, 24)


def test_list_series_names_each_input(scans: Path) -> None:
    done = CliRunner().invoke(
        app, ["infer", str(zoo_archive_path(MODEL)), str(scans), "--list-series"]
    )
    assert done.exit_code == 0, done.output
    assert f"{scans}: 2 DICOM series" in done.output
    assert "'upper' (24 images) in study/upper" in done.output
    assert f"{scans / 'ct.nii.gz'}: an image file" in done.output


def test_a_dataset_runs_its_test_images(spine_ct_path: Path, tmp_path: Path) -> None:
    from carina.data import locate_sample

    data = tmp_path / "mydata"
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (data / folder).mkdir(parents=True)
    (data / "imagesTr" / "a.nii.gz").write_bytes(spine_ct_path.read_bytes())
    (data / "labelsTr" / "a.nii.gz").write_bytes(locate_sample("spine_ct_vertebrae").read_bytes())
    (data / "imagesTs" / "new.nii.gz").write_bytes(spine_ct_path.read_bytes())
    case = {"image": "imagesTr/a.nii.gz", "label": "labelsTr/a.nii.gz"}
    document = {"training": [case], "validation": [case], "test": ["imagesTs/new.nii.gz"]}
    (data / "dataset.json").write_text(json.dumps(document))
    out = tmp_path / "out"
    done = CliRunner().invoke(
        app, ["infer", str(zoo_archive_path(MODEL)), "--dataset", str(data), "-o", str(out)]
    )
    assert done.exit_code == 0, done.output
    assert f"running on 1 test images of {data / 'dataset.json'}" in done.output
    assert sorted(p.name for p in out.iterdir()) == ["new_seg.nii.gz", CSV_NAME]
