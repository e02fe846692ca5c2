"""What a datastore holds, as typed records: images, their status, and label versions.

An image id is opaque (MONAI Label clients send volume names with spaces, OHIF sends DICOM
SeriesInstanceUIDs): it is never used as a path. A tag names a kind of label (``original``: a
model's output, ``final``: approved by a person, or any name a client sends) and is checked
here. Every saved label is a version of its tag, never overwritten.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from carina.errors import DatastoreError

#: The two parts of a datastore's training data (an image's part is decided once, then kept).
SPLITS = ("training", "validation")
#: A model's output.
ORIGINAL = "original"
#: A label a person saved as done.
FINAL = "final"
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: The longest image id accepted (DICOM UIDs are at most 64 characters; names a bit more).
MAX_ID_LENGTH = 256


class ImageStatus(StrEnum):
    """Where an image is in the annotation loop."""

    UNLABELLED = "unlabelled"
    """No ``final`` label yet."""
    LABELLED = "labelled"
    """A ``final`` label was saved."""
    APPROVED = "approved"
    """A reviewer approved its latest ``final`` label."""


@dataclass(frozen=True)
class LabelVersion:
    """One saved label of an image.

    Attributes:
        image_id: the image it labels.
        tag: ``original``, ``final`` or a client's tag.
        version: its name among the tag's versions (sortable: saving time first).
        saved_by: who saved it (a user or client name; ``import`` for imported labels).
        saved_at: when (aware, UTC).
        path: the label file.
        info: what the client sent with it (label names, model, time spent, ...).
    """

    image_id: str
    tag: str
    version: str
    saved_by: str
    saved_at: datetime
    path: Path
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageRecord:
    """One image of the datastore.

    Attributes:
        id: the opaque id clients use.
        name: a file name with its extension (what a client's downloader needs).
        imported_at: when it was added (aware, UTC): the order ``first`` follows.
        status: unlabelled, labelled or approved.
        labels: the latest version of each tag.
        info: user metadata, and who holds the image's lock (``lock``).
        split: ``training`` or ``validation`` once decided (it never changes after).
    """

    id: str
    name: str
    imported_at: datetime
    status: ImageStatus
    labels: dict[str, LabelVersion]
    info: dict[str, Any] = field(default_factory=dict)
    split: str | None = None


def check_tag(tag: str) -> str:
    """``tag`` when it is a safe tag name (letters, digits, ``_ . -``; at most 64).

    Raises:
        DatastoreError: a tag with path characters, empty or too long.
    """
    if not _TAG.fullmatch(tag or ""):
        raise DatastoreError(
            f"label tag {tag[:64]!r} is not allowed: use letters, digits, '_', '.' and '-' "
            "(at most 64, starting with a letter or digit)"
        )
    return tag


def check_image_id(image_id: str) -> str:
    """``image_id`` when it can name an image (any characters but control ones; not empty).

    Raises:
        DatastoreError: empty, too long or with control characters.
    """
    if not image_id or len(image_id) > MAX_ID_LENGTH or any(ord(c) < 32 for c in image_id):
        raise DatastoreError(
            f"image id {image_id[:64]!r} is not allowed: 1-{MAX_ID_LENGTH} printable characters"
        )
    return image_id


class Datastore(Protocol):
    """What the learning loop and the APIs need of a datastore; :class:`LocalDatastore` keeps
    it on the workspace, a DICOMweb backend will keep it on a PACS."""

    def images(self) -> list[ImageRecord]:
        """Every image, in import order."""
        ...

    def image(self, image_id: str) -> ImageRecord:
        """One image (``ImageNotFound`` when unknown)."""
        ...

    def image_path(self, image_id: str) -> Path:
        """A local file (or DICOM series folder) holding the image."""
        ...

    def add_image(
        self, source: Path, *, image_id: str | None = None, info: dict[str, Any] | None = None
    ) -> ImageRecord:
        """Add an image, checked first."""
        ...

    def save_label(
        self, image_id: str, label: Any, *, tag: str, saved_by: str, info: dict[str, Any] | None
    ) -> LabelVersion:
        """Save a new version of a label, checked against its image."""
        ...

    def label_versions(self, image_id: str, tag: str) -> list[LabelVersion]:
        """Every version of a tag's label, oldest first."""
        ...
