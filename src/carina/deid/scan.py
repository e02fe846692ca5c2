"""The PHI scanner: what in a DICOM object may still identify a patient, named by attribute and
reason, never by value. ``carina deid --verify`` runs it over an output; the server's PHI guard
runs it over every DICOM upload.

A finding is any of: the object not marked de-identified (PatientIdentityRemoved is not YES); a
person's name anywhere, at any depth, that is not a pseudonym; a patient ID, other patient ID or
accession number that is not a pseudonym; a birth date with its month and day; an address or
telephone number; the institution's name, address or department, or the device's serial number;
a private attribute not on the safe list; an age over 90 years (ages over 89 are written
``090Y``, "90 or older"); free text (descriptions, comments, protocol names, any LT, ST or UT)
with an MRN-like number, a telephone number, an e-mail address, an SSN, a ``Last^First`` name or
the name of a person the object holds; a SOP class that shows documents, reports, presentation
states or photographs; pixels marked with burned-in text, a screen save, or a US, secondary
capture or XA/RF image that does not say it has none; a file meta group that names the sender's
systems or another instance.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from carina.deid.options import PrivateTag
from carina.deid.pseudonyms import PSEUDONYM_PATTERN
from carina.deid.table import load_table
from carina.deid.text import text_findings

log = logging.getLogger(__name__)

_IDENTIFIERS = {"PatientID", "OtherPatientIDs", "AccessionNumber"}
_CONTACT = {
    "PatientAddress", "PatientTelephoneNumbers", "PatientTelecomInformation", "RegionOfResidence",
    "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers", "PersonAddress",
    "PersonTelephoneNumbers", "PersonTelecomInformation", "ResponsiblePersonTelephoneNumbers",
}  # fmt: skip
_SITE = {"InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
         "DeviceSerialNumber"}  # fmt: skip
#: A serial number that says nothing (what derived objects such as Carina's SEGs carry: "0").
_PLACEHOLDER = re.compile(r"\s*0*\s*")
_META = {
    "SourceApplicationEntityTitle", "SendingApplicationEntityTitle",
    "ReceivingApplicationEntityTitle", "SourcePresentationAddress", "SendingPresentationAddress",
    "ReceivingPresentationAddress", "PrivateInformationCreatorUID", "PrivateInformation",
}  # fmt: skip
_IMAGE = "1.2.840.10008.5.1.4.1.1."
#: SOP classes whose content is a document, a report, a drawing or a photograph.
_RISKY = tuple(f"{_IMAGE}{n}." for n in ("104", "88", "11", "77.1"))
#: Image SOP classes that often carry burned-in text: secondary capture, ultrasound, XA/RF.
_BURN_PRONE = tuple(f"{_IMAGE}{n}" for n in ("7", "6", "3", "12"))
_AGE = re.compile(r"(\d{3})Y")
#: The oldest age an object may show: 090Y stands for "90 or older" (HIPAA Safe Harbor).
_OLDEST = 90


@dataclass(frozen=True)
class Finding:
    """Something that may identify a patient.

    Attributes:
        tag: the attribute: its keyword path (``RequestAttributesSequence>AccessionNumber``),
            ``(gggg,eeee)`` for a private or unknown one, or ``file`` for the file itself.
        reason: why, in words; never the value.
    """

    tag: str
    reason: str

    def __str__(self) -> str:
        return f"{self.tag}: {self.reason}"

    def as_dict(self) -> dict[str, str]:
        """The finding as JSON."""
        return {"tag": self.tag, "reason": self.reason}


def scan_dataset(
    ds: Dataset,
    *,
    allow: frozenset[str] = frozenset(),
    pseudonym: re.Pattern[str] | None = None,
    safe_private: frozenset[PrivateTag] = frozenset(),
) -> list[Finding]:
    """The PHI findings of ``ds`` (see the module's description); empty when none.

    Args:
        ds: a parsed dataset (``stop_before_pixels`` is enough); its ``file_meta`` is checked
            when it has one.
        allow: keywords whose findings an operator accepts (``PatientSex``, ``InstitutionName``).
        pseudonym: what identifiers and names must match (whole) to count as pseudonyms;
            :data:`carina.deid.PSEUDONYM_PATTERN` by default.
        safe_private: the private attributes that are safe (creator, group, offset).
    """
    scanner = _Scanner(pseudonym or PSEUDONYM_PATTERN, safe_private)
    try:
        with pydicom_warnings_logged():
            found = scanner.scan(ds)
    except Exception as exc:  # pydicom raises many kinds on a hostile dataset
        found = [Finding("file", f"a malformed DICOM object ({type(exc).__name__})")]
    unique = dict.fromkeys(found)
    return [f for f in unique if f.tag.rsplit(">", 1)[-1] not in allow]


@contextlib.contextmanager
def pydicom_warnings_logged() -> Iterator[None]:
    """pydicom's warnings about odd values (a hostile file has many) go to the debug log, not to
    the user's terminal; they never carry values to a log above debug."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for warning in caught:
        log.debug("pydicom: %s", warning.message)


def pixel_findings(ds: Dataset) -> list[Finding]:
    """The findings about ``ds``'s pixels alone: a SOP class or image that may show identifying
    text or a face (pixels are never cleaned by Carina)."""
    return list(_Scanner(PSEUDONYM_PATTERN, frozenset()).pixels(ds))


class _Scanner:
    def __init__(self, pseudonym: re.Pattern[str], safe_private: frozenset[PrivateTag]) -> None:
        self.pseudonym = pseudonym
        self.safe_private = safe_private

    def is_pseudonym(self, value: object) -> bool:
        return self.pseudonym.fullmatch(str(value).strip()) is not None

    def scan(self, ds: Dataset) -> list[Finding]:
        found = [*self.marks(ds), *self.pixels(ds), *self.meta(ds)]
        names = [
            str(v)
            for _, element in _elements(ds, "")
            if element is not None and element.VR == "PN"
            for v in _values(element)
            if v and not self.is_pseudonym(v)
        ]
        private: dict[str, None] = {}
        for label, element in _elements(ds, ""):
            if element is None:
                found.append(Finding(label, "a malformed element"))
            elif element.tag.is_private:
                if not element.tag.is_private_creator and not self.safe(element):
                    block = f"({element.tag.group:04X},{element.tag.element >> 8:02X}xx)"
                    private[label[: label.rfind(">") + 1] + block] = None
            else:
                found.extend(self.element(label, element, names))
        found.extend(Finding(b, "private attributes not on the safe list") for b in private)
        return found

    def safe(self, element: DataElement) -> bool:
        creator = (element.private_creator or "").strip()
        return (creator, element.tag.group, element.tag.element & 0xFF) in self.safe_private

    def marks(self, ds: Dataset) -> Iterator[Finding]:
        if str(ds.get("PatientIdentityRemoved", "") or "").upper() != "YES":
            yield Finding("PatientIdentityRemoved", "not YES: the object is not de-identified")
        birth = re.sub(r"\D", "", str(ds.get("PatientBirthDate", "") or ""))
        if len(birth) >= 6 and birth[4:8] != "0101":
            yield Finding("PatientBirthDate", "a birth date with its month and day")

    def pixels(self, ds: Dataset) -> Iterator[Finding]:
        sop = str(ds.get("SOPClassUID", "") or "")
        burned = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
        if sop.startswith(_RISKY):
            yield Finding("SOPClassUID", "a document, report, drawing or photograph SOP class")
        if burned == "YES":
            yield Finding("BurnedInAnnotation", "YES: the pixels show identifying text")
        elif burned != "NO" and any(sop == p or sop.startswith(p + ".") for p in _BURN_PRONE):
            yield Finding("BurnedInAnnotation", "missing on a US, secondary capture or XA/RF image")
        kinds = [str(v).upper() for v in _values_of(ds, "ImageType")]
        if "SCREEN SAVE" in kinds:
            yield Finding("ImageType", "a screen save (may show identifying text)")

    def meta(self, ds: Dataset) -> Iterator[Finding]:
        meta = getattr(ds, "file_meta", None)
        if meta is None:
            return
        for keyword in sorted(_META):
            if meta.get(keyword):
                yield Finding(keyword, "the file meta names the sender's systems")
        stored, instance = meta.get("MediaStorageSOPInstanceUID"), ds.get("SOPInstanceUID")
        if stored and instance and str(stored) != str(instance):
            yield Finding("MediaStorageSOPInstanceUID", "the file meta names another instance")

    def element(self, label: str, element: DataElement, names: list[str]) -> Iterator[Finding]:
        keyword, vr = element.keyword, element.VR
        values = [v for v in _values(element) if v not in (None, "")]
        if not values or vr == "SQ":
            return
        if vr == "PN" and not all(self.is_pseudonym(v) for v in values):
            yield Finding(label, "a person's name")
        elif keyword in _IDENTIFIERS and not all(self.is_pseudonym(v) for v in values):
            yield Finding(label, "an identifier that is not a pseudonym")
        elif keyword in _CONTACT:
            yield Finding(label, "an address or telephone number")
        elif keyword in _SITE and not all(
            self.is_pseudonym(v) or _PLACEHOLDER.fullmatch(str(v)) for v in values
        ):
            yield Finding(label, "names the institution or the device")
        elif keyword == "PatientAge":
            match = _AGE.fullmatch(str(values[0]).strip())
            if match and int(match[1]) > _OLDEST:
                yield Finding(label, "an age over 90 years (write 090Y for 90 or older)")
        elif vr in ("LT", "ST", "UT") or keyword in _free_text():
            for reason in text_findings(" ".join(map(str, values)), names=names)[:1]:
                yield Finding(label, f"free text with {reason}")


@cache
def _free_text() -> frozenset[str]:
    """The descriptions of Table E.1-1: the attributes the Clean Descriptors option cleans."""
    table = load_table()
    return frozenset(row.keyword for row in table.rows.values() if "113105" in row.options)


def _elements(ds: Dataset, path: str) -> Iterator[tuple[str, DataElement | None]]:
    """``(label, element)`` of every element at every depth; ``None`` for one that cannot be
    read."""
    for tag in list(ds.keys()):
        try:
            element = ds[tag]
        except Exception:  # a malformed element: named, and the rest still scanned
            yield f"{path}({tag.group:04X},{tag.element:04X})", None
            continue
        label = path + (element.keyword or f"({tag.group:04X},{tag.element:04X})")
        yield label, element
        if element.VR == "SQ":
            for item in element.value or []:
                yield from _elements(item, label + ">")


def _values(element: DataElement) -> list[object]:
    value = element.value
    return list(value) if isinstance(value, MultiValue | list | tuple) else [value]


def _values_of(ds: Dataset, keyword: str) -> list[object]:
    element = ds.data_element(keyword) if keyword in ds else None
    return [] if element is None else _values(element)


def scan_files(
    paths: Iterable[Path],
    *,
    allow: frozenset[str] = frozenset(),
    pseudonym: re.Pattern[str] | None = None,
    safe_private: frozenset[PrivateTag] = frozenset(),
) -> dict[str, list[Finding]]:
    """The findings of every DICOM file under ``paths`` (files, or folders searched
    recursively), by path; a file with none maps to an empty list. In a folder, files that are
    not DICOM are passed over; a file named, or one that starts like DICOM, that cannot be read
    is a finding of its own. Arguments as :func:`scan_dataset`."""
    results: dict[str, list[Finding]] = {}
    for path, named in _files(paths):
        found = _scan_file(path, named, allow, pseudonym, safe_private)
        if found is not None:
            results[str(path)] = found
    return results


def _files(paths: Iterable[Path]) -> Iterator[tuple[Path, bool]]:
    for path in paths:
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                yield file, False
        else:
            yield path, True


def _scan_file(
    path: Path,
    named: bool,
    allow: frozenset[str],
    pseudonym: re.Pattern[str] | None,
    safe_private: frozenset[PrivateTag],
) -> list[Finding] | None:
    import pydicom
    from pydicom.errors import InvalidDicomError

    looks_dicom = path.suffix.lower() == ".dcm"
    try:
        with path.open("rb") as stream:
            stream.seek(128)
            looks_dicom = looks_dicom or stream.read(4) == b"DICM"
        with pydicom_warnings_logged():
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=looks_dicom)
        if looks_dicom and "SOPClassUID" not in ds and "PatientID" not in ds:
            raise InvalidDicomError("no DICOM attributes")
    except InvalidDicomError:
        return [Finding("file", "not a DICOM file")] if named or looks_dicom else None
    except Exception as exc:  # pydicom raises many kinds on a hostile file
        return [Finding("file", f"not a readable DICOM file ({type(exc).__name__})")]
    return scan_dataset(ds, allow=allow, pseudonym=pseudonym, safe_private=safe_private)
