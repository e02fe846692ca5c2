"""The zoo's index: one entry per shipped archive, with the sha256 of its manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from carina.errors import ArchiveError
from carina.files import atomic_write_bytes

ZOO_ROOT = Path(__file__).resolve().parent
INDEX_PATH = ZOO_ROOT / "index.json"
ARCHIVES = ZOO_ROOT / "archives"


class ZooEntry(BaseModel):
    """An archive of the zoo.

    Attributes:
        sha256: the sha256 of the archive's ``manifest.json``, which lists the sha256 of every
            other file: one sum covers the whole archive.
        size: bytes of all its files.
        metrics: ``eval/metrics.json`` as measured when it was built.
        source: how it was made (the ``carina zoo build`` command and its data).
        license: the terms of use of the model, from the data it was trained on.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    version: str
    type: str
    labels: list[str]
    description: str
    sha256: str
    size: int = Field(ge=0)
    metrics: dict[str, Any]
    source: str
    license: str = ""


def load_index(path: Path = INDEX_PATH) -> dict[str, ZooEntry]:
    """The zoo index by name (empty when none was built yet)."""
    if not path.is_file():
        return {}
    document = json.loads(path.read_text())
    return {entry["name"]: ZooEntry.model_validate(entry) for entry in document.get("archives", [])}


def save_index(entries: dict[str, ZooEntry], path: Path = INDEX_PATH) -> None:
    """Write the index (sorted by name) atomically."""
    document = {"archives": [entries[name].model_dump(mode="json") for name in sorted(entries)]}
    atomic_write_bytes(path, (json.dumps(document, indent=2) + "\n").encode())


def zoo_entry(name: str) -> ZooEntry:
    """The index entry of ``name``.

    Raises:
        ArchiveError: no such archive in the zoo.
    """
    entries = load_index()
    if name not in entries:
        known = ", ".join(sorted(entries)) or "none"
        raise ArchiveError(f"{name!r} is not in the zoo (known: {known})")
    return entries[name]


def zoo_archive_path(name: str) -> Path:
    """Where the archive ``name`` is shipped inside the package."""
    return ARCHIVES / name
