"""What a de-identification keeps: the profile's options, HIPAA Safe Harbor dates, the attributes
a user keeps, and the list of private attributes known to be safe."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from carina.errors import DeidentificationError

#: A private attribute: (private creator, group, element offset in its block 0x00-0xFF).
PrivateTag = tuple[str, int, int]


@dataclass(frozen=True)
class DeidOptions:
    """The Basic Application Confidentiality Profile (113100) and its options; the defaults are
    the research defaults of Carina's de-identification spec.

    Attributes:
        retain_modified_dates: 113107: dates move back by one offset per patient (intervals
            survive); times are kept.
        retain_patient_characteristics: 113108: sex, age (clamped to ``090Y``), size, weight,
            smoking and pregnancy status are kept.
        clean_descriptors: 113105: descriptions, comments and protocol names are cleaned of
            names, identifiers, dates, telephone numbers, e-mails and MRN-like numbers instead of
            being removed; what cannot be cleaned is removed.
        retain_safe_private: 113111: the private attributes of :attr:`safe_private` are kept;
            every other private attribute is removed.
        safe_harbor: HIPAA Safe Harbor dates: every date is reduced to its year and times are
            removed; overrides ``retain_modified_dates``.
        keep: keywords of attributes kept as they are, wherever they are (``--keep``).
        safe_private: the private attributes known to be safe (see :func:`load_safe_private`).

    Raises:
        DeidentificationError: a keyword to keep that DICOM does not know.
    """

    retain_modified_dates: bool = True
    retain_patient_characteristics: bool = True
    clean_descriptors: bool = True
    retain_safe_private: bool = False
    safe_harbor: bool = False
    keep: frozenset[str] = frozenset()
    safe_private: frozenset[PrivateTag] = frozenset()

    def __post_init__(self) -> None:
        from pydicom.datadict import tag_for_keyword

        unknown = sorted(word for word in self.keep if tag_for_keyword(word) is None)
        if unknown:
            raise DeidentificationError(
                f"--keep: {', '.join(unknown)}: not a DICOM keyword (e.g. PatientSex, "
                "BodyPartExamined)"
            )

    @property
    def shifts_dates(self) -> bool:
        """Whether dates move back by the patient's offset (113107 without Safe Harbor)."""
        return self.retain_modified_dates and not self.safe_harbor

    def table_codes(self) -> frozenset[str]:
        """The DCM codes of the options that change Table E.1-1's actions. Safe Harbor uses
        113107's rows (which attributes are dates of the record) to keep their years."""
        codes = set()
        if self.retain_modified_dates or self.safe_harbor:
            codes.add("113107")
        if self.retain_patient_characteristics:
            codes.add("113108")
        if self.clean_descriptors:
            codes.add("113105")
        if self.retain_safe_private:
            codes.add("113111")
        return frozenset(codes)

    def method_codes(self) -> list[str]:
        """The DCM codes written to DeidentificationMethodCodeSequence: 113100 and each option
        in force (Safe Harbor's years are no standard option: the method text says it)."""
        codes = self.table_codes() - ({"113107"} if not self.shifts_dates else set())
        return ["113100", *sorted(codes)]

    def as_dict(self) -> dict[str, object]:
        """The options as JSON (for reports)."""
        return {
            "retain_modified_dates": self.shifts_dates,
            "retain_patient_characteristics": self.retain_patient_characteristics,
            "clean_descriptors": self.clean_descriptors,
            "retain_safe_private": self.retain_safe_private,
            "safe_harbor": self.safe_harbor,
            "keep": sorted(self.keep),
            "safe_private_attributes": len(self.safe_private),
        }


def load_safe_private(path: Path) -> frozenset[PrivateTag]:
    """The safe-private list of a JSON file: private creator -> the tags of its block that are
    safe, written as pydicom's private dictionaries write them (``ggggxxee``)::

        {"GEMS_ACQU_01": ["0019xx0c", "0019xx1e"], "SIEMENS CT VA0  COAD": ["0019xx92"]}

    Raises:
        DeidentificationError: not such a file (naming the file and the entry).
    """
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DeidentificationError(f"{path.name}: not a readable JSON file ({exc})") from exc
    if not isinstance(document, dict):
        raise DeidentificationError(f"{path.name}: an object of creator -> tags is expected")
    found: set[PrivateTag] = set()
    for creator, tags in document.items():
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise DeidentificationError(f"{path.name}: {creator}: a list of tags is expected")
        found.update(_private_tags(path.name, creator, tags))
    return frozenset(found)


def _private_tags(file: str, creator: str, tags: Iterable[str]) -> Iterable[PrivateTag]:
    for text in tags:
        match = re.fullmatch(r"([0-9a-fA-F]{4})xx([0-9a-fA-F]{2})", text.strip())
        if match is None or int(match[1], 16) % 2 == 0:
            raise DeidentificationError(
                f"{file}: {creator}: {text!r} is not a private tag (ggggxxee, odd group gggg)"
            )
        yield creator.strip(), int(match[1], 16), int(match[2], 16)
