"""Regenerate ``table_e1_1.json``, Carina's copy of PS3.15 Table E.1-1, from its published source.

The DICOM standard's own site publishes the table as DocBook; innolitics/dicom-standard (MIT)
extracts it as JSON per edition. Carina's file is made from that JSON, at the commit named in its
header, plus the Type of each attribute whose action depends on it (``X/Z``, ``X/D``, ``Z/D``,
``X/Z/D``) in every composite IOD, from highdicom's tables of the standard (MIT)::

    git -C dicom-standard show 8670abdd9ad16c61af5146ef857899699bdd9c5f:standard/confidentiality_profile_attributes.json > e11.json
    python -m carina.deid.table_build e11.json src/carina/deid/table_e1_1.json

The output is deterministic: the same source and highdicom version give the same bytes.
"""  # noqa: E501 - the command is quoted whole

from __future__ import annotations

import hashlib
import json
import pkgutil
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: The edition and commit of innolitics/dicom-standard the shipped table was made from.
EDITION = "2024b"
COMMIT = "8670abdd9ad16c61af5146ef857899699bdd9c5f"
REPOSITORY = "innolitics/dicom-standard"
#: innolitics' option columns, by the DCM code of the option (PS3.16 CID 7050).
OPTION_COLUMNS = {
    "rtnLongFullDatesOpt": "113106",
    "rtnLongModifDatesOpt": "113107",
    "cleanDescOpt": "113105",
    "rtnUIDsOpt": "113110",
    "rtnDevIdOpt": "113109",
    "rtnPatCharsOpt": "113108",
    "rtnInstIdOpt": "113112",
    "cleanGraphOpt": "113103",
    "cleanStructContOpt": "113104",
    "rtnSafePrivOpt": "113111",
}
#: Basic-profile actions that depend on the attribute's Type in the object's IOD.
CONDITIONAL = {"X/Z", "X/D", "Z/D", "X/Z/D"}
_STRENGTH = {"1": 0, "1C": 0, "2": 1, "2C": 1}


def build(source: bytes, *, commit: str = COMMIT, edition: str = EDITION) -> str:
    """The text of ``table_e1_1.json`` from innolitics' ``confidentiality_profile_attributes.json``
    (its bytes) and the installed highdicom's IOD tables."""
    import highdicom
    from pydicom.datadict import keyword_for_tag

    attributes = json.loads(source)
    sop_classes, types = _iod_types()
    rows = []
    for entry in sorted(attributes, key=lambda item: item["tag"]):
        tag = entry["tag"]
        match = re.fullmatch(r"\(([0-9A-F]{4}),([0-9A-F]{4})\)", tag)
        keyword = keyword_for_tag(int(match[1] + match[2], 16)) if match else ""
        basic = entry["basicProfile"]
        row: dict[str, Any] = {
            "tag": tag,
            "keyword": keyword,
            "name": entry["name"],
            "in_std_iod": entry["stdCompIOD"] == "Y",
            "basic": basic,
            "options": {
                code: entry[column] for column, code in OPTION_COLUMNS.items() if column in entry
            },
        }
        if basic in CONDITIONAL and keyword:
            row["types"] = dict(sorted(types.get(keyword, {}).items()))
        rows.append(row)
    header = {
        "title": f"DICOM PS3.15 {edition} Table E.1-1 (Application Level Confidentiality "
        "Profile Attributes)",
        "source": f"DICOM PS3.15 {edition} Table E.1-1 (Application Level Confidentiality "
        f"Profile Attributes), via {REPOSITORY} commit {commit[:7]}, MIT",
        "source_url": f"https://github.com/{REPOSITORY}/blob/{commit}/standard/"
        "confidentiality_profile_attributes.json",
        "source_sha256": hashlib.sha256(source).hexdigest(),
        "licence": "MIT, Copyright (c) 2017 Innolitics, LLC.",
        "types_source": f"Type 1/1C and 2/2C of the conditional rows in each IOD, top level: "
        f"highdicom {highdicom.__version__} (_standard/, MIT)",
        "regenerate": "python -m carina.deid.table_build confidentiality_profile_attributes.json "
        "src/carina/deid/table_e1_1.json",
        "iods": dict(sorted(sop_classes.items())),
    }
    return _render(header, rows)


def _iod_types() -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """highdicom's SOP class -> IOD map, and keyword -> {IOD: "1" or "2"} for the attributes
    that an IOD requires at its top level (1C counted as 1, 2C as 2; the strongest wins)."""
    sop_classes = _highdicom_json("sop_class_iod_map.json")
    iod_modules = _highdicom_json("iod_module_map.json")
    module_attributes = _highdicom_json("module_attribute_map.json")
    types: dict[str, dict[str, str]] = {}
    for iod, modules in iod_modules.items():
        for module in modules:
            for attribute in module_attributes.get(module["key"], []):
                kind = attribute["type"]
                if attribute["path"] or kind not in _STRENGTH:
                    continue
                known = types.setdefault(attribute["keyword"], {})
                simple = kind[0]
                if iod not in known or _STRENGTH[simple] < _STRENGTH[known[iod]]:
                    known[iod] = simple
    return sop_classes, types


def _highdicom_json(name: str) -> Any:
    data = pkgutil.get_data("highdicom", f"_standard/{name}")
    if data is None:
        raise FileNotFoundError(f"highdicom ships no _standard/{name}")
    return json.loads(data)


def _render(header: dict[str, Any], rows: Iterable[dict[str, Any]]) -> str:
    """The header indented, then one row per line (a diff between editions reads by row)."""
    lines = [json.dumps(header, indent=1)[:-2] + ",", ' "rows": [']
    rendered = [f"  {json.dumps(row, sort_keys=False)}" for row in rows]
    lines.append(",\n".join(rendered))
    lines.append(" ]\n}\n")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """``python -m carina.deid.table_build SOURCE.json TARGET.json``."""
    source, target = (argv if argv is not None else sys.argv[1:])[:2]
    Path(target).write_text(build(Path(source).read_bytes()))


if __name__ == "__main__":
    main()
