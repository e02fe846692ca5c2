"""Table E.1-1 as data: its provenance, and how each kind of action resolves (options, reference
sequences, actions that depend on the attribute's Type in the object's IOD)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

import pytest
from pydicom.sr.codedict import codes

from carina.deid import load_table
from carina.deid.table import OPTION_MEANINGS, Action, Row, resolve
from carina.deid.table_build import COMMIT, CONDITIONAL, _render

CT = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"


def document() -> dict[str, object]:
    text = resources.files("carina.deid").joinpath("table_e1_1.json").read_text()
    parsed: dict[str, object] = json.loads(text)
    return parsed


def test_the_table_names_its_edition_source_and_licence() -> None:
    header = document()
    assert header["source"] == (
        "DICOM PS3.15 2024b Table E.1-1 (Application Level Confidentiality Profile "
        "Attributes), via innolitics/dicom-standard commit 8670abd, MIT"
    )
    assert COMMIT in str(header["source_url"])
    assert header["licence"] == "MIT, Copyright (c) 2017 Innolitics, LLC."
    assert len(str(header["source_sha256"])) == 64
    rows = header["rows"]
    assert isinstance(rows, list) and len(rows) == 621
    assert {row["basic"] for row in rows} == {
        "X", "Z", "D", "U", "X/Z", "X/D", "Z/D", "X/Z/D", "X/Z/U*",
    }  # fmt: skip
    assert all(row["keyword"] or "X" in row["tag"] or "GGGG" in row["tag"] for row in rows)
    assert all("types" in row for row in rows if row["basic"] in CONDITIONAL and row["keyword"])


def test_the_rows_carry_the_standards_actions() -> None:
    table = load_table()
    row = table.by_keyword
    assert (row["PatientName"].basic, row["PatientID"].basic) == ("Z", "Z/D")
    assert row["StudyInstanceUID"].basic == "U"
    assert row["ReferencedImageSequence"].basic == "X/Z/U*"
    assert row["StudyDate"].options == {"113106": "K", "113107": "C"}
    assert row["PatientAge"].options == {"113108": "K"}
    assert row["StudyDescription"].options == {"113105": "C"}
    assert table.row(0x60003000) is not None and table.row(0x60023000) is not None  # 60xx
    assert table.row(0x50100010) is table.row(0x50000000)  # curves: one row for 50xx,xxxx
    assert table.row(0x00091001) is None  # private: handled apart
    assert table.iods[CT] == "ct-image"


def test_the_option_codes_are_dicoms() -> None:
    for code, meaning in OPTION_MEANINGS.items():
        found = [c for c in codes.DCM.dir() if getattr(codes.DCM, c).value == code]
        assert found and getattr(codes.DCM, found[0]).meaning == meaning


@pytest.mark.parametrize(
    ("keyword", "options", "sop_class", "nested", "expected"),
    [
        ("PatientBirthDate", set(), CT, False, Action.EMPTY),  # Z
        ("PatientAddress", set(), CT, False, Action.REMOVE),  # X
        ("StudyInstanceUID", set(), CT, False, Action.UID),  # U
        ("ContentCreatorName", set(), CT, False, Action.EMPTY),  # Z/D, not in a CT: Z
        ("ReferencedImageSequence", set(), CT, False, Action.REFERENCES),  # X/Z/U*
        ("StudyDate", {"113107"}, CT, False, Action.CLEAN),  # option C
        ("PatientAge", {"113108"}, CT, False, Action.KEEP),  # option K
        ("PatientAge", set(), CT, False, Action.REMOVE),
        ("StudyDescription", {"113105"}, CT, False, Action.CLEAN),
        ("StudyDescription", {"113107", "113108"}, CT, False, Action.REMOVE),
        ("ContentDate", set(), CT, False, Action.EMPTY),  # Z/D, Type 2C in CT Image
        ("ContentDate", set(), ENHANCED_CT, False, Action.DUMMY),  # Type 1 in Enhanced CT
        ("ContentDate", set(), CT, True, Action.EMPTY),  # nested: no Type known
        ("AcquisitionDate", set(), CT, False, Action.REMOVE),  # X/Z, Type 3 in CT Image
        ("DeviceSerialNumber", set(), CT, False, Action.REMOVE),  # X/Z/D, Type 3
        ("DeviceSerialNumber", set(), ENHANCED_CT, False, Action.DUMMY),  # Type 1
        ("PatientSexNeutered", set(), CT, False, Action.EMPTY),  # X/Z, Type 2C
        ("SeriesDate", set(), "1.2.840.10008.5.1.4.1.1.128", False, Action.DUMMY),  # X/D, PET
        ("SeriesDate", set(), None, False, Action.REMOVE),  # unknown SOP class
    ],
)
def test_each_kind_of_action_resolves(
    keyword: str,
    options: set[str],
    sop_class: str | None,
    nested: bool,
    expected: Action,
) -> None:
    table = load_table()
    iod = table.iods.get(sop_class) if sop_class else None
    row = table.by_keyword[keyword]
    assert resolve(row, frozenset(options), iod=iod, nested=nested) == expected


def test_a_type_1_attribute_without_d_is_emptied() -> None:
    row = Row(tag="(0001,0001)", keyword="X", name="x", basic="X/Z", types={"ct-image": "1"})
    assert resolve(row, frozenset(), iod="ct-image", nested=False) == Action.EMPTY


def test_the_builder_writes_one_row_per_line() -> None:
    text = _render({"source": "s", "iods": {}}, [{"tag": "(0008,0050)"}, {"tag": "(0008,0020)"}])
    assert json.loads(text)["rows"] == [{"tag": "(0008,0050)"}, {"tag": "(0008,0020)"}]
    assert text.count("\n  {") == 2


@pytest.mark.integration
def test_the_wheel_carries_the_table(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(root)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("carina-*.whl")
    assert "carina/deid/table_e1_1.json" in zipfile.ZipFile(wheel).namelist()
