"""The key file (made private, refused when others can read it), and what each option and Safe
Harbor change in the output."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from carina.deid import DeidOptions, deidentify_dataset, load_key, load_safe_private
from carina.errors import DeidentificationError
from tests.deid.conftest import DATES, KEY, TIMES


@pytest.fixture(scope="module")
def slice_ds(phi_series: Path) -> Dataset:
    """One planted slice (read once; de-identification never changes it)."""
    return pydicom.dcmread(sorted(phi_series.glob("*.dcm"))[0])


def test_a_new_key_is_private_and_loads_back(tmp_path: Path) -> None:
    path = tmp_path / "config" / "carina" / "deid.key"
    key = load_key(path, create=True)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_key(path) == key
    assert load_key(tmp_path / "other.key", create=True) != key


def test_a_key_others_can_read_is_refused_naming_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "deid.key"
    load_key(path, create=True)
    path.chmod(0o644)
    with pytest.raises(DeidentificationError, match=r"mode 0644.*chmod 600 deid\.key"):
        load_key(path)


@pytest.mark.parametrize("text", ["abcd\n", "not a key at all\n"])
def test_a_short_or_garbled_key_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "deid.key"
    path.write_text(text)
    path.chmod(0o600)
    with pytest.raises(DeidentificationError, match="not a key of 32 bytes"):
        load_key(path)


def test_a_missing_key_is_not_made_unless_asked(tmp_path: Path) -> None:
    with pytest.raises(DeidentificationError, match="not found"):
        load_key(tmp_path / "deid.key")
    assert not (tmp_path / "deid.key").exists()


def test_safe_harbor_keeps_years_only_and_says_so(slice_ds: Dataset) -> None:
    out = deidentify_dataset(slice_ds, KEY, DeidOptions(safe_harbor=True)).dataset
    assert [out.get(k) for k in DATES] == ["20240101"] * len(DATES)
    assert out.AcquisitionDateTime == "2024"
    assert [k for k in TIMES if k in out and out.get(k)] == []  # Z or X, never the time
    assert out.LongitudinalTemporalInformationModified == "REMOVED"
    codes = [item.CodeValue for item in out.DeidentificationMethodCodeSequence]
    assert "113107" not in codes
    assert any("Safe Harbor" in value for value in out.DeidentificationMethod)


def test_without_options_the_basic_profile_removes_more(slice_ds: Dataset) -> None:
    options = DeidOptions(
        retain_modified_dates=False, retain_patient_characteristics=False, clean_descriptors=False
    )
    result = deidentify_dataset(slice_ds, KEY, options)
    out = result.dataset
    assert (out.StudyDate, out.StudyTime, out.PatientSex) == ("", "", "")  # Z, Type 2
    assert "SeriesDate" not in out and "AcquisitionDate" not in out  # X/D, X/Z: Type 3
    assert out.ContentDate == ""  # Z/D, Type 2C
    for removed in ("StudyDescription", "ImageComments", "PatientAge", "PatientWeight",
                    "RequestAttributesSequence"):  # fmt: skip
        assert removed not in out, removed
    assert out.LongitudinalTemporalInformationModified == "REMOVED"
    assert [i.CodeValue for i in out.DeidentificationMethodCodeSequence] == ["113100"]


def test_keep_keeps_an_attribute_as_it_is(slice_ds: Dataset) -> None:
    options = DeidOptions(retain_patient_characteristics=False, keep=frozenset({"PatientSex"}))
    result = deidentify_dataset(slice_ds, KEY, options)
    assert result.dataset.PatientSex == "M"
    assert ("PatientSex", "K") in result.actions
    assert any("PatientSex" in v for v in result.dataset.DeidentificationMethod)


def test_an_unknown_keyword_to_keep_is_refused() -> None:
    with pytest.raises(DeidentificationError, match="--keep: PatientShoeSize: not a DICOM"):
        DeidOptions(keep=frozenset({"PatientShoeSize"}))


def test_safe_private_attributes_are_kept_and_the_rest_removed(
    slice_ds: Dataset, tmp_path: Path
) -> None:
    listing = tmp_path / "safe.json"
    listing.write_text(json.dumps({"ACME 1.1": ["0009xx02"]}))
    options = DeidOptions(retain_safe_private=True, safe_private=load_safe_private(listing))
    result = deidentify_dataset(slice_ds, KEY, options)
    out = result.dataset
    assert float(out[0x00091002].value) == 1.5 and out[0x00090010].value == "ACME 1.1"
    assert 0x00091001 not in out
    assert ("(0009,1001)", "X") in result.actions and ("(0009,1002)", "K") in result.actions
    assert "113111" in [i.CodeValue for i in out.DeidentificationMethodCodeSequence]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"ACME": ["0008xx02"]}', "'0008xx02' is not a private tag"),
        ('{"ACME": "0009xx02"}', "ACME: a list of tags is expected"),
        ("[1, 2]", "an object of creator -> tags"),
        ("{", "not a readable JSON file"),
    ],
)
def test_a_wrong_safe_private_list_is_refused(tmp_path: Path, text: str, reason: str) -> None:
    listing = tmp_path / "safe.json"
    listing.write_text(text)
    with pytest.raises(DeidentificationError, match=f"safe.json: .*{reason}"):
        load_safe_private(listing)


def test_names_and_dates_outside_the_table_are_handled(slice_ds: Dataset) -> None:
    ds = slice_ds.copy()
    ds.EvaluatorName = "DOE^JANE"  # a PN the table does not list
    ds.add_new(0x00181203, "DA", "20240315")  # a date the table does not list
    ds.ReferencedFrameOfReferenceUID = "1.2.3.4.5"  # a UID the table does not list
    out = deidentify_dataset(ds, KEY, DeidOptions()).dataset
    assert out.EvaluatorName == ""
    assert out[0x00181203].value == out.StudyDate
    assert out.ReferencedFrameOfReferenceUID.startswith("2.25.")
