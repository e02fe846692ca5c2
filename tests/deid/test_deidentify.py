"""De-identifying a real CT series with patient data planted everywhere: every rule of Carina's
de-identification spec, references that still resolve, file meta rebuilt, the same volume out,
keyed determinism, a report with actions and no value, and a SEG that inherits only pseudonyms."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from carina.deid import (
    IMPLEMENTATION_CLASS_UID,
    PSEUDONYM_PATTERN,
    DeidOptions,
    DeidReport,
    Pseudonyms,
    deidentify_dataset,
    deidentify_files,
    scan_files,
)
from carina.deid.pseudonyms import shift_date
from carina.io import load_volume
from carina.io.dicom import read_series
from carina.io.dicom_seg import write_seg
from tests.deid.conftest import DATES, KEY, OTHER_KEY, PHI, TIMES, read_all


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, phi_series: Path) -> tuple[Path, DeidReport]:
    out = tmp_path_factory.mktemp("deid") / "out"
    return out, deidentify_files([phi_series], out, KEY, DeidOptions())


@pytest.fixture(scope="module")
def outputs(run: tuple[Path, DeidReport]) -> list[Dataset]:
    return read_all(run[0])


@pytest.fixture(scope="module")
def inputs(phi_series: Path) -> list[Dataset]:
    return read_all(phi_series)


def every_text(ds: Dataset) -> str:
    """Every value of ``ds`` at every depth, and of its file meta, as one text."""
    parts = [str(e.value) for e in ds.iterall() if e.VR not in ("OB", "OW", "SQ")]
    parts += [str(e.value) for e in ds.file_meta]
    return "\n".join(parts)


def test_no_planted_value_is_left_anywhere(outputs: list[Dataset]) -> None:
    assert len(outputs) == 6
    for ds in outputs:
        text = every_text(ds).upper()
        assert [phi for phi in PHI if phi.upper() in text] == []


def test_patient_and_visit_identifiers_become_keyed_pseudonyms(outputs: list[Dataset]) -> None:
    pseudonyms = Pseudonyms(KEY)
    patient = pseudonyms.patient("MRN12345", "HOSP-A")
    for ds in outputs:
        assert ds.PatientID == patient and str(ds.PatientName) == patient
        assert PSEUDONYM_PATTERN.fullmatch(ds.AccessionNumber) and ds.AccessionNumber[:4] == "ACC-"
        assert PSEUDONYM_PATTERN.fullmatch(ds.StudyID) and ds.StudyID[:4] == "STU-"
        request = ds.RequestAttributesSequence[0]  # cleaned (113105): identifiers inside too
        assert request.AccessionNumber == ds.AccessionNumber
        assert "RequestedProcedureID" not in request  # X
        assert "ScheduledPerformingPhysicianName" not in request  # X, nested
        for removed in ("OtherPatientIDsSequence", "IssuerOfPatientID", "PatientAddress",
                        "PatientTelephoneNumbers", "OperatorsName", "InstitutionName",
                        "InstitutionAddress", "DeviceSerialNumber", "StationName",
                        "OriginalAttributesSequence", "PatientBirthTime"):  # fmt: skip
            assert removed not in ds, removed
        assert ds.ReferringPhysicianName == "" and ds.PatientBirthDate == ""  # Z (Type 2)
    assert len({ds.AccessionNumber for ds in outputs}) == 1


def test_patient_characteristics_are_kept_with_the_age_clamped(outputs: list[Dataset]) -> None:
    for ds in outputs:
        assert (ds.PatientSex, float(ds.PatientWeight), ds.PatientAge) == ("M", 70.0, "090Y")


def test_dates_move_back_by_one_offset_and_times_stay(outputs: list[Dataset]) -> None:
    offset = Pseudonyms(KEY).offset_days("MRN12345")
    assert 365 <= offset <= 730
    moved = shift_date("20240315", offset)
    for ds in outputs:
        assert [ds.get(k) for k in DATES] == [moved] * len(DATES)
        assert [ds.get(k) for k in TIMES] == ["101500"] * len(TIMES)
        assert ds.AcquisitionDateTime == shift_date("20240314", offset) + "235959.5+0100"
        assert ds.LongitudinalTemporalInformationModified == "MODIFIED"


def test_descriptions_are_cleaned(outputs: list[Dataset]) -> None:
    ds = outputs[0]
    assert ds.StudyDescription == "CT chest for *** ***"
    assert ds.ProtocolName == "*** spine protocol"
    assert ds.SeriesDescription == "spine CT of *** ***"
    assert not any(ch.isdigit() or ch == "@" for ch in ds.ImageComments)


def test_private_overlay_curve_and_signature_attributes_are_removed(
    outputs: list[Dataset],
) -> None:
    for ds in outputs:
        groups = {element.tag.group for element in ds.iterall()}
        assert not [g for g in groups if g % 2 or g >> 8 in (0x50, 0x60) or g == 0xFFFA]


def test_every_uid_is_remapped_and_references_still_resolve(
    inputs: list[Dataset], outputs: list[Dataset]
) -> None:
    originals = {str(e.value) for ds in inputs for e in ds.iterall() if e.VR == "UI"}
    for ds in outputs:
        for element in ds.iterall():
            if element.VR == "UI" and not element.keyword.endswith("ClassUID"):
                assert str(element.value).startswith("2.25."), element.keyword
                assert str(element.value) not in originals
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert len({ds.get(keyword) for ds in outputs}) == 1
    assert len({ds.SOPInstanceUID for ds in outputs}) == len(outputs)
    first = outputs[0].SOPInstanceUID
    for ds in outputs[1:]:
        referenced = ds.ReferencedImageSequence[0]
        assert referenced.ReferencedSOPInstanceUID == first
        assert referenced.ReferencedSOPClassUID == ds.SOPClassUID


def test_file_meta_is_rebuilt_and_the_layout_named_by_new_uids(
    run: tuple[Path, DeidReport], inputs: list[Dataset], outputs: list[Dataset]
) -> None:
    out = run[0]
    for ds, original in zip(outputs, inputs, strict=True):
        meta = ds.file_meta
        assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert meta.MediaStorageSOPClassUID == ds.SOPClassUID
        assert meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
        assert "SourceApplicationEntityTitle" not in meta
        expected = out / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
        assert Path(ds.filename) == expected


def test_the_method_is_written(outputs: list[Dataset]) -> None:
    ds = outputs[0]
    assert ds.PatientIdentityRemoved == "YES"
    codes = [(i.CodeValue, i.CodingSchemeDesignator) for i in ds.DeidentificationMethodCodeSequence]
    assert codes == [(c, "DCM") for c in ("113100", "113105", "113107", "113108")]
    assert "DICOM PS3.15 2024b Table E.1-1" in ds.DeidentificationMethod


def test_the_output_loads_as_the_same_volume(
    run: tuple[Path, DeidReport], phi_series: Path
) -> None:
    (series,) = {p.parent for p in run[0].rglob("*.dcm")}
    before, after = load_volume(phi_series), load_volume(series)
    np.testing.assert_array_equal(after.array, before.array)
    np.testing.assert_allclose(after.affine, before.affine, atol=1e-6)


def test_one_key_gives_identical_files_another_key_other_pseudonyms(
    run: tuple[Path, DeidReport], phi_series: Path, tmp_path: Path
) -> None:
    def digests(folder: Path) -> dict[Path, str]:
        return {
            p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.rglob("*.dcm")
        }

    deidentify_files([phi_series], tmp_path / "again", KEY, DeidOptions())
    assert digests(tmp_path / "again") == digests(run[0])
    deidentify_files([phi_series], tmp_path / "other", OTHER_KEY, DeidOptions())
    ours, theirs = read_all(run[0]), read_all(tmp_path / "other")
    for keyword in ("PatientID", "AccessionNumber", "StudyInstanceUID", "SOPInstanceUID"):
        assert {ds.get(keyword) for ds in ours}.isdisjoint({ds.get(keyword) for ds in theirs})
    assert ours[0].StudyDate != theirs[0].StudyDate


def test_the_report_has_actions_and_no_value(run: tuple[Path, DeidReport]) -> None:
    report = run[1]
    document = report.as_dict()
    assert document["files"] == {
        "inputs": 7, "written": 6, "not_dicom": 1, "failed": 0, "duplicates": 0,
        "pixel_warnings": 0,
    }  # fmt: skip
    actions = document["actions"]
    expected = {
        "PatientName": "D", "PatientID": "D", "AccessionNumber": "D", "PatientBirthDate": "Z",
        "OtherPatientIDsSequence": "X", "StudyInstanceUID": "U", "StudyDate": "C",
        "StudyDescription": "C", "PatientAge": "K", "(0009,1001)": "X", "OperatorsName": "X",
        "ReferencedImageSequence>ReferencedSOPInstanceUID": "U",
        "RequestAttributesSequence>AccessionNumber": "D", "(6000,0022)": "X",
    }  # fmt: skip
    for attribute, code in expected.items():
        assert code in actions[attribute], attribute
    text = json.dumps(document)
    assert [phi for phi in [*PHI, "notes"] if phi.upper() in text.upper()] == []
    assert document["key_fingerprint"] == Pseudonyms(KEY).fingerprint()


def test_the_input_is_left_as_it_was(phi_series: Path, tmp_path: Path) -> None:
    files = sorted(phi_series.iterdir())
    before = [p.read_bytes() for p in files]
    deidentify_files([phi_series], tmp_path / "out", KEY, DeidOptions())
    assert [p.read_bytes() for p in files] == before
    ds = pydicom.dcmread(files[0])
    copy = ds.copy()
    deidentify_dataset(ds, KEY, DeidOptions())
    assert ds == copy and ds.file_meta == copy.file_meta


def test_verify_finds_nothing_left_in_the_output(run: tuple[Path, DeidReport]) -> None:
    results = scan_files([run[0]])
    assert len(results) == 6 and all(found == [] for found in results.values())


def test_a_seg_of_the_deidentified_series_carries_only_pseudonyms(
    run: tuple[Path, DeidReport], tmp_path: Path
) -> None:
    (series,) = {p.parent for p in run[0].rglob("*.dcm")}
    volume, datasets = read_series(series, max_bytes=2**30)
    labels = np.zeros(volume.shape, np.uint8)
    labels[20:40, 10:30, 1:4] = 1
    path = write_seg(volume.with_array(labels), datasets, ["L3"], tmp_path / "seg.dcm")
    seg = pydicom.dcmread(path)
    patient = Pseudonyms(KEY).patient("MRN12345", "HOSP-A")
    assert (str(seg.PatientName), seg.PatientID) == (patient, patient)
    assert seg.StudyInstanceUID == datasets[0].StudyInstanceUID
    assert seg.StudyInstanceUID.startswith("2.25.")
    assert seg.AccessionNumber == datasets[0].AccessionNumber
    text = every_text(seg).upper()
    assert [phi for phi in PHI if phi.upper() in text] == []
