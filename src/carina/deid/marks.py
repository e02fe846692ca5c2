"""What a de-identified object says about itself: PatientIdentityRemoved, the method (text and
codes), whether its dates were modified, and a File Meta Information group rebuilt from nothing.

The file meta of the original is never copied: its Source, Sending and Receiving AE titles and its
implementation can name the hospital's systems. The new group holds the new SOP instance UID, the
original transfer syntax (the pixels are not re-encoded) and Carina's implementation UID.
"""

from __future__ import annotations

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from carina import __version__
from carina.deid.options import DeidOptions
from carina.deid.table import OPTION_MEANINGS

#: Carina's Implementation Class UID: a ``2.25`` UUID-derived UID (no organisation root needed),
#: fixed once for every version of Carina; the version is in the version name.
IMPLEMENTATION_CLASS_UID = "2.25.217585559408660870424356522107406818054"
#: Carina's Implementation Version Name (SH, at most 16 characters).
IMPLEMENTATION_VERSION_NAME = f"CARINA_{__version__}"[:16]
_MAX_LO = 64


def mark_deidentified(
    ds: Dataset, options: DeidOptions, *, edition: str, dates_changed: bool
) -> None:
    """Write PatientIdentityRemoved, DeidentificationMethod(CodeSequence) and
    LongitudinalTemporalInformationModified into ``ds`` (the top-level dataset)."""
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = method_text(options, edition=edition)
    items = []
    for code in options.method_codes():
        item = Dataset()
        item.CodeValue = code
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = OPTION_MEANINGS[code]
        items.append(item)
    ds.DeidentificationMethodCodeSequence = Sequence(items)
    if options.shifts_dates:
        ds.LongitudinalTemporalInformationModified = "MODIFIED" if dates_changed else "UNMODIFIED"
    else:
        ds.LongitudinalTemporalInformationModified = "REMOVED"


def method_text(options: DeidOptions, *, edition: str) -> list[str]:
    """DeidentificationMethod's values (LO, each at most 64 characters): who, which table, which
    options, and what the user kept."""
    values = [
        f"Carina {__version__} carina deid",
        edition,
        *(OPTION_MEANINGS[code] for code in options.method_codes()),
        "Keyed pseudonyms (HMAC-SHA256) of UIDs, IDs and dates",
    ]
    if options.safe_harbor:
        values.append("HIPAA Safe Harbor: dates reduced to the year, times removed")
    if options.keep:
        values.append("Kept as asked: " + " ".join(sorted(options.keep)))
    return [value[:_MAX_LO] for value in values]


def file_meta(ds: Dataset, original: Dataset, *, instance_uid: str) -> FileMetaDataset:
    """A new File Meta Information group for the de-identified ``ds`` (made from ``original``,
    its new SOP instance UID ``instance_uid``); only the transfer syntax comes from the
    original."""
    old = getattr(original, "file_meta", None) or FileMetaDataset()
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = UID(
        str(ds.get("SOPClassUID", "") or old.get("MediaStorageSOPClassUID", ""))
    )
    meta.MediaStorageSOPInstanceUID = UID(instance_uid)
    meta.TransferSyntaxUID = transfer_syntax(original)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return meta


def transfer_syntax(original: Dataset) -> UID:
    """The transfer syntax ``original`` was encoded in (from its file meta, else from how it was
    read: implicit or explicit VR little endian)."""
    meta = getattr(original, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID"):
        return UID(str(meta.TransferSyntaxUID))
    implicit, _little = original.original_encoding
    return ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
