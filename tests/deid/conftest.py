"""A small real CT series with patient data planted everywhere the profile looks: names (nested
too), identifiers, dates and times, free text, private attributes, references between slices,
addresses, the institution and device, an age over 89, overlays, curves, signatures and the
file meta's sender."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from carina.data import locate_sample
from carina.data.dicom_series import write_dicom_series
from carina.io import Volume, load_volume

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
#: Every planted value that identifies someone: none may appear in an output or a report.
PHI = [
    "DOE", "JOHN", "MRN12345", "HOSP-A", "998877", "ACC778899", "S4711", "19280315", "Elm Street",
    "555-0142", "HOUSE", "CAMERON", "WILSON", "CHASE", "20240315", "20240314", "Plainsboro",
    "SN-998", "CT01", "HOSPITAL_PACS", "secret", "12345678", "555-123-4567", "jdoe@example.org",
    "RP123",
]  # fmt: skip
DATES = ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "InstanceCreationDate")
TIMES = ("StudyTime", "SeriesTime", "AcquisitionTime", "ContentTime")


@pytest.fixture(scope="session")
def ct_slices() -> Volume:
    """Six slices of the shipped spine CT (fast, still a real series)."""
    return load_volume(locate_sample("spine_ct_image")).crop(2, 30, 36)


@pytest.fixture(scope="session")
def phi_series(tmp_path_factory: pytest.TempPathFactory, ct_slices: Volume) -> Path:
    """The six slices as a DICOM series, with the patient data of :data:`PHI` planted."""
    folder = tmp_path_factory.mktemp("identified") / "DOE_JOHN"
    folder.mkdir()
    files = write_dicom_series(ct_slices, folder, description="spine CT of John Doe")
    datasets = sorted((pydicom.dcmread(f) for f in files), key=lambda ds: int(ds.InstanceNumber))
    first = datasets[0]
    for ds in datasets:
        plant(ds, first.SOPInstanceUID if ds is not first else None)
        ds.save_as(ds.filename, enforce_file_format=True)
    (folder / "notes.txt").write_text("not DICOM")
    return folder


def plant(ds: Dataset, reference: str | None) -> None:
    """Patient data in ``ds``; a reference to the first slice when ``reference`` is given."""
    for marked in ("PatientIdentityRemoved", "DeidentificationMethod"):  # no longer true
        if marked in ds:
            delattr(ds, marked)
    ds.PatientName, ds.PatientID, ds.IssuerOfPatientID = "DOE^JOHN", "MRN12345", "HOSP-A"
    ds.OtherPatientIDsSequence = Sequence([_item(PatientID="998877", IssuerOfPatientID="X")])
    ds.AccessionNumber, ds.StudyID = "ACC778899", "S4711"
    ds.PatientBirthDate, ds.PatientAge, ds.PatientSex, ds.PatientWeight = (
        "19280315",
        "095Y",
        "M",
        70,
    )
    ds.PatientAddress, ds.PatientTelephoneNumbers = "12 Elm Street, Springfield", "555-0142"
    ds.ReferringPhysicianName, ds.OperatorsName = "HOUSE^GREGORY", "CAMERON^ALLISON"
    ds.RequestAttributesSequence = Sequence(
        [_item(RequestedProcedureID="RP123", AccessionNumber="ACC778899",
               ScheduledPerformingPhysicianName="WILSON^JAMES")]
    )  # fmt: skip
    ds.OriginalAttributesSequence = Sequence([_item(PatientName="CHASE^ROBERT")])
    for keyword in DATES:
        setattr(ds, keyword, "20240315")
    for keyword in TIMES:
        setattr(ds, keyword, "101500")
    ds.AcquisitionDateTime = "20240314235959.5+0100"
    ds.StudyDescription = "CT chest for John Doe"
    ds.ImageComments = "MRN 12345678, call 555-123-4567 or jdoe@example.org"
    ds.ProtocolName = "Doe spine protocol"
    ds.InstitutionName, ds.InstitutionAddress = "Princeton-Plainsboro", "Plainsboro NJ"
    ds.DeviceSerialNumber, ds.StationName = "SN-998", "CT01"
    ds.BurnedInAnnotation = "NO"
    block = ds.private_block(0x0009, "ACME 1.1", create=True)
    block.add_new(0x01, "LO", "secret John Doe")
    block.add_new(0x02, "DS", "1.5")
    ds.add_new(0x60000022, "LO", "overlay of DOE")
    ds.add_new(0x50002500, "LO", "curve of DOE")
    if reference is not None:
        ds.ReferencedImageSequence = Sequence(
            [_item(ReferencedSOPClassUID=ds.SOPClassUID, ReferencedSOPInstanceUID=reference)]
        )
    ds.file_meta.SourceApplicationEntityTitle = "HOSPITAL_PACS"


def _item(**values: object) -> Dataset:
    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def read_all(folder: Path) -> list[Dataset]:
    """The DICOM files under ``folder``, by InstanceNumber."""
    found = [pydicom.dcmread(p) for p in sorted(folder.rglob("*.dcm"))]
    return sorted(found, key=lambda ds: int(ds.InstanceNumber))
