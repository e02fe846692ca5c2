"""De-identify one DICOM dataset by Table E.1-1, with keyed pseudonyms, into a new dataset.

Every element is looked at, at every depth of every sequence:

- an attribute of the table gets the action :func:`carina.deid.table.resolve` chooses;
- the patient's ID and name become the patient's pseudonym, accession numbers and study IDs
  theirs (wherever they are);
- every UID is remapped to its keyed pseudonym, except SOP class and transfer syntax UIDs, coding
  scheme UIDs and the standard's own (``1.2.840.10008.``), so references between the instances
  of a study keep resolving;
- dates of the record (DA, DT) move back by the patient's offset, in the table or not (or keep
  only their year under Safe Harbor); times stay as they are;
- a person's name the table does not list is emptied; private attributes are removed unless kept
  as safe; overlays (groups 60xx) and curves (50xx) are removed whole, group lengths too;
- everything else the table does not list is kept.

The input dataset is not changed. The actions are reported per attribute (its keyword path, or
``(gggg,eeee)`` for a private or unknown one), never with a value.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydicom.dataelem import DataElement, empty_value_for_VR
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException
from pydicom.multival import MultiValue

from carina.deid.marks import file_meta, mark_deidentified
from carina.deid.options import DeidOptions
from carina.deid.pseudonyms import (
    Pseudonyms,
    shift_date,
    shift_datetime,
    year_of_date,
    year_of_datetime,
)
from carina.deid.table import Action, ProfileTable, load_table, resolve
from carina.deid.text import clean_text
from carina.errors import DeidentificationError

#: UIDs that name kinds of things, not instances: never remapped.
_KEPT_UIDS = {"TransferSyntaxUID", "CodingSchemeUID"}
#: Identifiers that get keyed pseudonyms (by their prefix), wherever they are.
_CODED = {"AccessionNumber": "ACC", "StudyID": "STU"}
#: Identifiers whose values a description must not repeat.
_IDENTIFIERS = {
    "PatientID", "OtherPatientIDs", "AccessionNumber", "StudyID", "RequestedProcedureID",
    "ScheduledProcedureStepID", "PerformedProcedureStepID", "AdmissionID", "MedicalRecordLocator",
}  # fmt: skip
_TEXT = {"LO", "SH", "ST", "LT", "UT", "UC", "CS"}
_NUMBERS = {"DS", "IS", "US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"}
_DUMMY_TEXT = "ANONYMIZED"
_DUMMY = {"DA": "19000101", "DT": "19000101000000", "TM": "000000", "AS": "000Y"}
_AGE = re.compile(r"(\d{3})Y")
#: The oldest age kept as is: older ones become 090Y (HIPAA's "90 or older").
_OLDEST = 89


@dataclass(frozen=True)
class DeidResult:
    """A de-identified dataset and what was done.

    Attributes:
        dataset: the new dataset, with its rebuilt ``file_meta`` (ready to write as Part 10).
        actions: ``(attribute, action code)`` once per attribute path (``PatientName``,
            ``ReferencedImageSequence>ReferencedSOPInstanceUID``, ``(0009,1002)``); codes are
            Table E.1-1's (``X`` removed, ``Z`` emptied, ``D`` dummy or pseudonym, ``C``
            cleaned or date moved, ``U`` UID remapped, ``K`` kept).
    """

    dataset: Dataset
    actions: list[tuple[str, str]]


@dataclass(frozen=True)
class _Context:
    """What every element of one object is de-identified with."""

    pseudonyms: Pseudonyms
    options: DeidOptions
    table: ProfileTable
    iod: str | None
    patient: str
    offset: int
    names: tuple[str, ...]
    identifiers: tuple[str, ...]

    @classmethod
    def of(cls, ds: Dataset, key: bytes, options: DeidOptions) -> _Context:
        pseudonyms = Pseudonyms(key)
        table = load_table()
        patient_id = str(ds.get("PatientID", "") or "")
        issuer = str(ds.get("IssuerOfPatientID", "") or "")
        identity = patient_id or "study:" + str(ds.get("StudyInstanceUID", "") or "")
        names: list[str] = []
        identifiers: list[str] = []
        for element in ds.iterall():
            if element.VR == "PN" and element.value:
                names.extend(str(v) for v in _values(element))
            elif element.keyword in _IDENTIFIERS and element.value:
                identifiers.extend(str(v) for v in _values(element))
        return cls(
            pseudonyms=pseudonyms,
            options=options,
            table=table,
            iod=table.iods.get(str(ds.get("SOPClassUID", "") or "")),
            patient=pseudonyms.patient(patient_id, issuer)
            if patient_id
            else pseudonyms.code("PAT", "pid:" + identity),
            offset=pseudonyms.offset_days(identity),
            names=tuple(names),
            identifiers=tuple(identifiers),
        )


def deidentify_dataset(ds: Dataset, key: bytes, options: DeidOptions) -> DeidResult:
    """A de-identified copy of ``ds`` (see the module's description), marked as such, with new
    file meta; ``ds`` is left as it was.

    Raises:
        DeidentificationError: a malformed element that cannot be read (the message names the
            error's type, never a value).
    """
    try:
        context = _Context.of(ds, key, options)
        out = Dataset()
        for tag in list(ds.keys()):
            out[tag] = copy.deepcopy(ds[tag])
        walker = _Walker(context)
        walker.walk(out, path="", nested=False)
        for keyword in ("PatientID", "PatientName"):
            if keyword not in out and keyword not in options.keep:
                setattr(out, keyword, context.patient)
                walker.note(keyword, "D")
        mark_deidentified(
            out, options, edition=context.table.edition, dates_changed=walker.dates_changed
        )
        instance = str(out.get("SOPInstanceUID", "") or "")
        old_meta = getattr(ds, "file_meta", None)
        if not instance and old_meta is not None and old_meta.get("MediaStorageSOPInstanceUID"):
            instance = context.pseudonyms.uid(str(old_meta.MediaStorageSOPInstanceUID))
        out.file_meta = file_meta(out, ds, instance_uid=instance)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError,
            NotImplementedError, BytesLengthException) as exc:  # fmt: skip
        raise DeidentificationError(
            f"a malformed DICOM element stops de-identification ({type(exc).__name__})"
        ) from exc
    return DeidResult(dataset=out, actions=walker.actions())


class _Walker:
    """Applies the actions to a dataset and its sequences, recording them."""

    def __init__(self, context: _Context) -> None:
        self.context = context
        self.options = context.options
        self.dates_changed = False
        self._actions: dict[tuple[str, str], None] = {}

    def note(self, label: str, code: str) -> None:
        self._actions[(label, code)] = None

    def actions(self) -> list[tuple[str, str]]:
        return list(self._actions)

    def walk(self, ds: Dataset, *, path: str, nested: bool) -> None:
        """De-identify ``ds`` in place (``path``: the sequences it is inside, ``A>B>``)."""
        self._private(ds, path)
        for tag in list(ds.keys()):
            if tag.is_private:
                continue
            element = ds[tag]
            label = path + (element.keyword or f"({tag.group:04X},{tag.element:04X})")
            action = self._action(element, nested)
            if action is not None:
                code = self._apply(ds, element, action, label, nested)
                if code:
                    self.note(label, code)

    def _private(self, ds: Dataset, path: str) -> None:
        """Remove the private attributes of ``ds``, but those kept as safe, and the creators of
        blocks left empty."""
        blocks = set()
        options = self.options
        for tag in list(ds.keys()):
            if not tag.is_private or tag.is_private_creator:
                continue
            creator = (ds[tag].private_creator or "").strip()
            label = f"{path}({tag.group:04X},{tag.element:04X})"
            if options.retain_safe_private and (
                (creator, tag.group, tag.element & 0xFF) in options.safe_private
            ):
                blocks.add((tag.group, tag.element >> 8))
                self.note(label, "K")
                continue
            del ds[tag]
            self.note(label, "X")
        for tag in list(ds.keys()):
            if tag.is_private_creator and (tag.group, tag.element) not in blocks:
                del ds[tag]  # the creator of a block with nothing kept

    def _action(self, element: DataElement, nested: bool) -> Action | str | None:
        """The action on one standard element: a table :class:`Action`, ``"pseudonym"``, or
        None to leave it as it is."""
        keyword, vr = element.keyword, element.VR
        if keyword in self.options.keep:
            return Action.KEEP
        group = element.tag.group
        if element.tag.element == 0 or group == 2 or group >> 8 in (0x50, 0x60):
            return Action.REMOVE  # group lengths, file meta in the body, curves and overlays
        if keyword in ("PatientID", *_CODED) or (keyword == "PatientName" and not nested):
            return "pseudonym"
        row = self.context.table.row(element.tag)
        if row is not None:
            codes = self.options.table_codes()
            if self.options.safe_harbor and vr not in ("DA", "DT"):
                codes -= {"113107"}  # only the dates of the record keep their years
            return resolve(row, codes, iod=self.context.iod, nested=nested)
        if vr == "UI":
            return Action.UID
        if vr in ("DA", "DT"):
            dated = self.options.shifts_dates or self.options.safe_harbor
            return Action.CLEAN if dated else Action.EMPTY
        if vr == "PN":
            return Action.EMPTY
        return Action.REFERENCES if vr == "SQ" else None

    def _apply(
        self, ds: Dataset, element: DataElement, action: Action | str, label: str, nested: bool
    ) -> str | None:
        """Apply ``action``; the code to report (None for an untouched element)."""
        if action == Action.REMOVE:
            del ds[element.tag]
            return "X"
        if action == Action.EMPTY:
            element.value = empty_value_for_VR(element.VR)
            return "Z"
        if action == Action.KEEP:
            _clamp_age(element)
            return "K"
        if action == Action.UID:
            return "U" if self._remap(element) else None
        if action == Action.REFERENCES:
            self._items(element, label)
            return "U" if self.context.table.row(element.tag) is not None else None
        if action == "pseudonym":
            return self._pseudonym(ds, element, nested)
        if action == Action.DUMMY:
            return self._dummy(ds, element, label)
        return self._clean(ds, element, label)

    def _items(self, element: DataElement, label: str) -> None:
        for item in element.value or []:
            self.walk(item, path=label + ">", nested=True)

    def _remap(self, element: DataElement) -> bool:
        """Replace the UIDs of ``element`` by their pseudonyms; whether any changed."""
        keyword = element.keyword
        if keyword.endswith("ClassUID") or keyword in _KEPT_UIDS:
            return False
        uid = self.context.pseudonyms.uid
        return _map_values(
            element, lambda v: v if not v or v.startswith("1.2.840.10008.") else uid(v)
        )

    def _pseudonym(self, ds: Dataset, element: DataElement, nested: bool) -> str:
        value = str(element.value or "")
        pseudonyms, keyword = self.context.pseudonyms, element.keyword
        if not nested and keyword in ("PatientID", "PatientName"):
            element.value = self.context.patient
        elif keyword == "PatientID":
            issuer = str(ds.get("IssuerOfPatientID", "") or "")
            element.value = pseudonyms.patient(value, issuer) if value else value
        elif value:
            element.value = pseudonyms.code(_CODED[keyword], f"{keyword}:{value}")
        return "D"

    def _dummy(self, ds: Dataset, element: DataElement, label: str) -> str:
        """A dummy of the element's VR: a keyed pseudonym for names and identifiers, a fixed
        value otherwise; a sequence keeps its items, de-identified; binary values are emptied."""
        vr, code = element.VR, self.context.pseudonyms.code
        if vr == "SQ":
            self._items(element, label)
        elif vr == "UI":
            self._remap(element)
        elif vr == "PN":
            _map_values(element, lambda v: code("PN", "pn:" + v))
        elif vr in ("LO", "SH", "UC", "AE"):
            _map_values(element, lambda v: code("ID", f"{element.keyword}:{v}"))
        elif vr in ("CS", "LT", "ST", "UT", "UR"):
            element.value = _DUMMY_TEXT
        elif vr in _DUMMY:
            element.value = _DUMMY[vr]
        elif vr in _NUMBERS:
            element.value = 0
        else:
            element.value = empty_value_for_VR(vr)
            return "Z"
        return "D"

    def _clean(self, ds: Dataset, element: DataElement, label: str) -> str | None:
        """Option ``C``: dates moved (or their year kept), times kept, text cleaned, sequences
        de-identified inside; what cannot be cleaned is removed."""
        vr = element.VR
        if vr in ("DA", "DT"):
            return self._date(element)
        if vr == "TM":
            return "K"
        if vr == "SQ":
            self._items(element, label)
            return "C"
        if vr in _TEXT:
            context = self.context
            try:
                _map_values(
                    element,
                    lambda v: clean_text(v, names=context.names, identifiers=context.identifiers),
                )
                return "C"
            except ValueError:
                pass
        del ds[element.tag]
        return "X"

    def _date(self, element: DataElement) -> str:
        """Move a date back by the patient's offset, or keep its year (Safe Harbor); a value
        that is not a date is emptied."""
        days = self.context.offset
        if self.options.safe_harbor:
            change: Callable[[str], str] = year_of_date if element.VR == "DA" else year_of_datetime
        elif element.VR == "DA":
            change = lambda v: shift_date(v, days)  # noqa: E731
        else:
            change = lambda v: shift_datetime(v, days)  # noqa: E731
        try:
            if _map_values(element, lambda v: change(v) if v else v):
                self.dates_changed = True
        except ValueError:
            element.value = empty_value_for_VR(element.VR)
            return "Z"
        return "C"


def _values(element: DataElement) -> list[Any]:
    value = element.value
    if isinstance(value, MultiValue | list | tuple):
        return list(value)
    return [value]


def _map_values(element: DataElement, change: Callable[[str], str]) -> bool:
    """Replace each value of a (possibly multi-valued) text element by ``change(value)``;
    whether any changed. ``change`` may raise ValueError: the element is then left as it was."""
    value = element.value
    if value is None or value == "":
        return False
    originals = [str(v) for v in _values(element)]
    changed = [change(v) for v in originals]
    if changed == originals:
        return False
    multiple = isinstance(value, MultiValue | list | tuple)
    element.value = changed if multiple else changed[0]
    return True


def _clamp_age(element: DataElement) -> None:
    """An age over 89 years becomes ``090Y`` (HIPAA Safe Harbor's "90 or older")."""
    if element.VR != "AS" or not element.value:
        return
    match = _AGE.fullmatch(str(element.value).strip())
    if match and int(match[1]) > _OLDEST:
        element.value = "090Y"
