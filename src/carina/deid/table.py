"""PS3.15 Table E.1-1 as data: what the Basic Application Confidentiality Profile does to each
attribute, and how an option changes it.

The rows come from ``table_e1_1.json`` (package data; its header names the edition, the source,
its licence and the command that regenerates it). :func:`resolve` turns a row into the one action
Carina takes on an attribute of a given object:

- an option the user chose that names the attribute wins (a retain option's ``K`` before a clean
  option's ``C``);
- ``X/Z/U*`` (reference sequences) keeps the sequence and remaps the UIDs inside (``U*``), so that
  references between the de-identified instances still resolve;
- ``X/Z``, ``X/D``, ``Z/D`` and ``X/Z/D`` take the strongest action the object's IOD allows: ``X``
  where the attribute is Type 3 (or absent from the IOD, or nested), ``Z`` where it is Type 2 or
  2C, ``D`` where it is Type 1 or 1C (the Types come with the table, per IOD, from the standard's
  module tables); where that action is not among the row's choices, the next one towards ``D``
  is taken (``Z/D`` on a Type 3 attribute empties it), and a Type 1 attribute whose row offers
  no ``D`` is emptied.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Any

#: The table Carina ships (package data beside this module).
TABLE_FILE = "table_e1_1.json"


class Action(StrEnum):
    """What is done to an attribute (PS3.15 E.1-1's codes, and ``U*`` for reference sequences)."""

    REMOVE = "X"
    EMPTY = "Z"
    DUMMY = "D"
    KEEP = "K"
    CLEAN = "C"
    UID = "U"
    REFERENCES = "U*"


#: DCM codes (PS3.16 CID 7050) of the options a row may name, with their meanings.
OPTION_MEANINGS = {
    "113100": "Basic Application Confidentiality Profile",
    "113101": "Clean Pixel Data Option",
    "113102": "Clean Recognizable Visual Features Option",
    "113103": "Clean Graphics Option",
    "113104": "Clean Structured Content Option",
    "113105": "Clean Descriptors Option",
    "113106": "Retain Longitudinal Temporal Information Full Dates Option",
    "113107": "Retain Longitudinal Temporal Information Modified Dates Option",
    "113108": "Retain Patient Characteristics Option",
    "113109": "Retain Device Identity Option",
    "113110": "Retain UIDs Option",
    "113111": "Retain Safe Private Option",
    "113112": "Retain Institution Identity Option",
}


@dataclass(frozen=True)
class Row:
    """One attribute of Table E.1-1.

    Attributes:
        tag: as the standard writes it: ``(0010,0010)``, ``(50XX,XXXX)``.
        keyword: the DICOM keyword ("" for repeating groups and private attributes).
        name: the attribute's name in the table.
        basic: the basic profile's action (``X``, ``Z/D``, ``X/Z/U*``, ...).
        options: DCM option code -> the action under that option (``K``, ``C``).
        types: IOD -> ``"1"`` or ``"2"``, for the conditional actions: the IODs that require the
            attribute at their top level.
    """

    tag: str
    keyword: str
    name: str
    basic: str
    options: dict[str, str] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ProfileTable:
    """Table E.1-1, looked up by tag.

    Attributes:
        source: the edition and where the data comes from (for reports and the method text).
        rows: by tag number, for the attributes with one tag.
        iods: SOP Class UID -> IOD name (the keys of :attr:`Row.types`).
        by_keyword: the rows of standard attributes by keyword.
    """

    source: str
    rows: dict[int, Row]
    iods: dict[str, str]
    by_keyword: dict[str, Row]

    @property
    def edition(self) -> str:
        """``DICOM PS3.15 2024b Table E.1-1``: the edition, for the method text."""
        return self.source.split(" (")[0]

    def row(self, tag: int) -> Row | None:
        """The row of a standard (even-group) tag; overlays ``60xx`` and curves ``50xx`` match
        their repeating-group rows. Private tags have no row here (see :mod:`.private`)."""
        found = self.rows.get(tag)
        if found is not None:
            return found
        group, element = tag >> 16, tag & 0xFFFF
        if group & 0xFF00 == 0x5000 and group % 2 == 0:
            return self.rows.get(_CURVES)
        if group & 0xFF00 == 0x6000 and group % 2 == 0:
            return self.rows.get(0x60000000 | element)
        return None


#: Repeating groups are stored under their first group (50xx -> 5000, 60xx -> 6000).
_CURVES = 0x50000000


@cache
def load_table() -> ProfileTable:
    """The shipped table (read once per process)."""
    text = resources.files(__package__).joinpath(TABLE_FILE).read_text()
    return parse_table(json.loads(text))


def parse_table(document: dict[str, Any]) -> ProfileTable:
    """A :class:`ProfileTable` from the JSON document ``table_e1_1.json`` holds."""
    rows: dict[int, Row] = {}
    by_keyword: dict[str, Row] = {}
    for entry in document["rows"]:
        row = Row(
            tag=entry["tag"],
            keyword=entry["keyword"],
            name=entry["name"],
            basic=entry["basic"],
            options=dict(entry["options"]),
            types=dict(entry.get("types", {})),
        )
        number = _tag_number(row.tag)
        if number is not None:
            rows[number] = row
        if row.keyword:
            by_keyword[row.keyword] = row
    return ProfileTable(
        source=document["source"], rows=rows, iods=dict(document["iods"]), by_keyword=by_keyword
    )


def _tag_number(text: str) -> int | None:
    """``(0010,0010)`` -> 0x00100010; ``(50XX,XXXX)`` -> 0x50000000; ``(60XX,3000)`` ->
    0x60003000; None for the private-attributes row."""
    match = re.fullmatch(r"\(([0-9A-FX]{4}),([0-9A-FX]{4})\)", text.upper())
    if match is None:
        return None
    return int((match[1] + match[2]).replace("X", "0"), 16)


def resolve(row: Row, options: frozenset[str], *, iod: str | None, nested: bool) -> Action:
    """The action Carina takes on ``row``'s attribute.

    Args:
        row: the attribute's row.
        options: the DCM codes of the options in force (``113107``, ...).
        iod: the object's IOD (from its SOP class), None when not known.
        nested: the attribute is inside a sequence item (its Type in the IOD is not known).
    """
    chosen = [row.options[code] for code in sorted(options) if code in row.options]
    if "K" in chosen:
        return Action.KEEP
    if chosen:
        return Action(chosen[0])
    if row.basic == "X/Z/U*":
        return Action.REFERENCES
    choices = row.basic.split("/")
    if len(choices) == 1:
        return Action(row.basic)
    required = None if nested or iod is None else row.types.get(iod)
    preferred = {"1": "D", "2": "Z"}.get(required or "", "X")
    for code in _WEAKER_FIRST[_WEAKER_FIRST.index(preferred) :]:
        if code in choices:
            return Action(code)
    return Action(choices[-1])


#: From the strongest removal to the weakest: X removes, Z empties, D leaves a dummy.
_WEAKER_FIRST = ["X", "Z", "D"]
