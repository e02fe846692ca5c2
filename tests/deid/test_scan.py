"""The PHI scanner: each planted item of an identified series is found, by attribute and never
by value; pixels that may show text, hostile files and the operator's allowances."""

from __future__ import annotations

import re
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian

from carina.deid import DeidOptions, Finding, deidentify_dataset, scan_dataset, scan_files
from carina.deid.text import clean_text, text_findings
from tests.deid.conftest import KEY, PHI

US = "1.2.840.10008.5.1.4.1.1.6.1"


@pytest.fixture(scope="module")
def findings(phi_series: Path) -> dict[str, list[Finding]]:
    return scan_files([phi_series])


def test_every_planted_item_is_found_on_the_input(findings: dict[str, list[Finding]]) -> None:
    assert len(findings) == 6  # notes.txt, not DICOM, is passed over
    expected = {
        "PatientIdentityRemoved", "PatientName", "ReferringPhysicianName", "OperatorsName",
        "RequestAttributesSequence>ScheduledPerformingPhysicianName",
        "OriginalAttributesSequence>PatientName", "PatientID", "OtherPatientIDsSequence>PatientID",
        "AccessionNumber", "RequestAttributesSequence>AccessionNumber", "PatientBirthDate",
        "PatientAddress", "PatientTelephoneNumbers", "InstitutionName", "InstitutionAddress",
        "DeviceSerialNumber", "(0009,10xx)", "PatientAge", "StudyDescription", "SeriesDescription",
        "ImageComments", "ProtocolName", "SourceApplicationEntityTitle",
    }  # fmt: skip
    for found in findings.values():
        assert {f.tag for f in found} >= expected
        assert all(phi.upper() not in str(f).upper() for f in found for phi in PHI)


def test_free_text_reasons_name_what_was_seen() -> None:
    assert text_findings("call 555-123-4567") == ["a telephone number"]
    assert text_findings("jdoe@example.org") == ["an e-mail address"]
    assert text_findings("SSN 123-45-6789") == ["an SSN"]
    assert text_findings("MRN: A12345") == ["an MRN-like number"]
    assert text_findings("for SMITH^ANNA") == ["a Last^First name"]
    assert text_findings("for Anna Smith", names=["SMITH^ANNA"]) == [
        "the name of a person in the object"
    ]
    for harmless in ("CT 3.0 B30f, 120 kV, 512 x 512", "slices 120-240", "WW 1500 WL -400"):
        assert text_findings(harmless) == [], harmless


def test_cleaning_keeps_what_is_not_identifying() -> None:
    cleaned = clean_text(
        "Chest CT 2024-03-15 for Smith (ID X77), 120 kV",
        names=["SMITH^ANNA"],
        identifiers=["X77"],
    )
    assert cleaned == "Chest CT *** for *** (ID ***), 120 kV"


def test_pixels_that_may_show_text_are_findings(phi_series: Path) -> None:
    ds = deidentify_dataset(
        pydicom.dcmread(next(phi_series.glob("*.dcm"))), KEY, DeidOptions()
    ).dataset
    assert scan_dataset(ds) == []
    ds.SOPClassUID = US
    del ds.BurnedInAnnotation
    assert [f.tag for f in scan_dataset(ds)] == ["BurnedInAnnotation"]
    ds.BurnedInAnnotation = "NO"
    assert scan_dataset(ds) == []
    ds.BurnedInAnnotation = "YES"
    ds.ImageType = ["DERIVED", "SECONDARY", "SCREEN SAVE"]
    assert [f.tag for f in scan_dataset(ds)] == ["BurnedInAnnotation", "ImageType"]
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"  # Enhanced SR
    assert "SOPClassUID" in [f.tag for f in scan_dataset(ds)]


def test_allow_and_a_pseudonym_pattern_of_the_sites_own(phi_series: Path) -> None:
    ds = pydicom.dcmread(next(phi_series.glob("*.dcm")), stop_before_pixels=True)
    tags = {f.tag for f in scan_dataset(ds, allow=frozenset({"PatientAge", "InstitutionName"}))}
    assert "PatientAge" not in tags and "InstitutionName" not in tags and "PatientName" in tags
    site = re.compile(r"MRN\d+|DOE\^JOHN")
    tags = {f.tag for f in scan_dataset(ds, pseudonym=site)}
    assert "PatientID" not in tags and "PatientName" not in tags and "AccessionNumber" in tags


def test_a_corrupted_or_foreign_file_is_a_finding_not_a_traceback(
    phi_series: Path, tmp_path: Path
) -> None:
    source = next(phi_series.glob("*.dcm"))
    (tmp_path / "truncated.dcm").write_bytes(source.read_bytes()[:400])
    ds = pydicom.dcmread(source)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(tmp_path / "deflated.dcm", enforce_file_format=True)
    data = bytearray((tmp_path / "deflated.dcm").read_bytes())
    body = 144 + int.from_bytes(data[140:144], "little")  # after the file meta group
    data[body : body + 200] = bytes(b ^ 0x5A for b in data[body : body + 200])
    (tmp_path / "deflated.dcm").write_bytes(bytes(data))
    (tmp_path / "noise.dcm").write_bytes(b"\0" * 128 + b"DICM" + bytes(range(256)) * 4)
    (tmp_path / "readme.txt").write_text("hello")
    results = {Path(k).name: v for k, v in scan_files([tmp_path]).items()}
    assert set(results) == {"truncated.dcm", "deflated.dcm", "noise.dcm"}
    assert results["deflated.dcm"] == [Finding("file", "not a readable DICOM file (error)")]
    assert results["noise.dcm"] == [Finding("file", "not a DICOM file")]
    assert "PatientIdentityRemoved" in {f.tag for f in results["truncated.dcm"]}
    named = scan_files([tmp_path / "readme.txt"])
    assert named == {str(tmp_path / "readme.txt"): [Finding("file", "not a DICOM file")]}


def test_a_dataset_with_a_malformed_element_is_a_finding() -> None:
    ds = Dataset()
    ds.PatientIdentityRemoved = "YES"
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    ds._dict[Tag(0x00280010)] = RawDataElement(Tag(0x00280010), "US", 3, b"\1\2\3", 0, True, True)
    found = scan_dataset(ds)
    assert found and all("malformed" in f.reason for f in found)
