"""The datastore on the workspace: ``WORKSPACE/datastore/``, shared by every replica.

Layout (nothing is kept in memory, so a replica sees another's change on its next call)::

    datastore/datastore.json                 label names: {"labels": {"1": "L2", ...}}
    datastore/images/<key>/info.json         id, file name, import time, user metadata, approval
    datastore/images/<key>/image.nii.gz      the image as imported (or series/ for DICOM)
    datastore/images/<key>/labels/<tag>/<version>.nii.gz and <version>.json

``<key>`` is a digest of the image id: ids are opaque (any characters) and never a path. A label
version is named by its saving time and a random part and is never overwritten, so two clients
saving at the same moment both keep theirs; its sidecar JSON (who, when, what the client sent) is
written last and makes it visible. Every write is atomic.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from carina.datastore.records import (
    FINAL,
    SPLITS,
    ImageRecord,
    ImageStatus,
    LabelVersion,
    check_image_id,
    check_tag,
)
from carina.errors import DatastoreError, ImageNotFound, ImageReadError
from carina.files import atomic_write_bytes, owned_folder, owner_tag, sweep_stale
from carina.io import Volume, load_volume, save_volume
from carina.io.checks import check_volume
from carina.io.formats import suffix_of

_INFO = "info.json"
_SETTINGS = "datastore.json"
#: How far a label's geometry may differ from its image's (millimetres, and direction cosines).
_GEOMETRY_TOLERANCE = 1e-3


class LocalDatastore:
    """Images and versioned labels in a folder of the workspace.

    Args:
        root: ``WORKSPACE/datastore``.
        max_bytes: the largest decoded image accepted.
    """

    def __init__(self, root: Path, *, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes

    def close(self) -> None:
        """Release what the datastore holds open (nothing, for a folder)."""

    # -- images ----------------------------------------------------------------------------------

    def images(self) -> list[ImageRecord]:
        """Every image, in import order."""
        folder = self.root / "images"
        records = []
        for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
            if entry.name.startswith(".") or not (entry / _INFO).is_file():
                continue
            try:
                records.append(self._record(entry))
            except (OSError, ValueError, KeyError):
                continue  # removed meanwhile, or half written by a killed process
        return sorted(records, key=lambda r: (r.imported_at, r.id))

    def image(self, image_id: str) -> ImageRecord:
        """One image.

        Raises:
            ImageNotFound: no image of that id.
        """
        return self._record(self._folder(image_id))

    def image_path(self, image_id: str) -> Path:
        """The image's file (or its DICOM series folder), to read with ``load_volume``."""
        folder = self._folder(image_id)
        return folder / str(self._info(folder)["file"])

    def pinned_image_path(self, image_id: str, folder: Path) -> Path:
        """A path to the image that lasts as long as ``folder`` (a training job's): here the
        stored file itself, which only a delete removes."""
        return self.image_path(image_id)

    def volume(self, image_id: str) -> Volume:
        """The image, read and checked.

        Raises:
            ImageNotFound, ImageReadError: as named.
        """
        path = self.image_path(image_id)
        return check_volume(load_volume(path, max_bytes=self.max_bytes), source=image_id)

    def add_image(
        self, source: Path, *, image_id: str | None = None, info: dict[str, Any] | None = None
    ) -> ImageRecord:
        """Add an image file (NIfTI, NRRD, MHA, ...) or a DICOM series folder, checked first.

        Raises:
            DatastoreError: the id is taken or not allowed, or the image cannot be read.
        """
        image_id = check_image_id(image_id or _stem(source))
        target = self._path(image_id)
        if target.exists():
            raise DatastoreError(f"image {image_id!r} is already in the datastore; delete it first")
        try:
            check_volume(load_volume(source, max_bytes=self.max_bytes), source=source.name)
        except ImageReadError as exc:
            raise DatastoreError(f"image {image_id!r}: {exc}") from exc
        staging = owned_folder(self.root / "images", f".{target.name}.new")
        try:
            name = "series" if source.is_dir() else f"image{suffix_of(source)}"
            if source.is_dir():
                shutil.copytree(source, staging / name)
            else:
                shutil.copyfile(source, staging / name)
            record = {
                "id": image_id,
                "name": _display_name(image_id, source),
                "file": name,
                "imported_at": datetime.now(UTC).isoformat(timespec="microseconds"),
                "info": dict(info or {}),
            }
            atomic_write_bytes(staging / _INFO, json.dumps(record, indent=2).encode())
            staging.rename(target)
        except OSError as exc:
            if target.exists():  # added meanwhile through another replica
                raise DatastoreError(f"image {image_id!r} is already in the datastore") from exc
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return self.image(image_id)

    def delete_image(self, image_id: str) -> ImageRecord:
        """Remove an image and all its labels; returns what it was.

        Raises:
            ImageNotFound: no image of that id.
        """
        record = self.image(image_id)
        folder = self._folder(image_id)
        retired = folder.with_name(f".{folder.name}.deleted{owner_tag()}{uuid.uuid4().hex}")
        folder.rename(retired)
        shutil.rmtree(retired, ignore_errors=True)
        return record

    def update_info(self, image_id: str, changes: dict[str, Any]) -> ImageRecord:
        """Merge ``changes`` into the image's user metadata (``None`` removes a key).

        Raises:
            ImageNotFound: no image of that id.
        """
        folder = self._folder(image_id)
        document = self._info(folder)
        info = dict(document.get("info") or {})
        for key, value in changes.items():
            if value is None:
                info.pop(key, None)
            else:
                info[key] = value
        document["info"] = info
        atomic_write_bytes(folder / _INFO, json.dumps(document, indent=2).encode())
        return self.image(image_id)

    def set_split(self, image_id: str, split: str) -> ImageRecord:
        """Put the image in ``training`` or ``validation`` (kept from then on).

        Raises:
            ImageNotFound: no image of that id.
            DatastoreError: another split name, or the image already has another split.
        """
        if split not in SPLITS:
            raise DatastoreError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
        folder = self._folder(image_id)
        document = self._info(folder)
        if document.get("split") not in (None, split):
            raise DatastoreError(f"image {image_id!r} is already in {document['split']}")
        document["split"] = split
        atomic_write_bytes(folder / _INFO, json.dumps(document, indent=2).encode())
        return self.image(image_id)

    def lock(self, image_id: str, *, by: str, seconds: float = 3600.0) -> ImageRecord:
        """Hold the image for ``by`` (an annotator) for ``seconds``: strategies skip it meanwhile.

        Raises:
            ImageNotFound: no image of that id.
            DatastoreError: someone else holds it.
        """
        holder = self.image(image_id).info.get("lock")
        if isinstance(holder, dict) and holder.get("by") != by and _until(holder) > time.time():
            raise DatastoreError(f"image {image_id!r} is locked by {holder.get('by')!r}")
        until = datetime.fromtimestamp(time.time() + seconds, UTC).isoformat(timespec="seconds")
        return self.update_info(image_id, {"lock": {"by": by, "until": until}})

    def unlock(self, image_id: str) -> ImageRecord:
        """Release the image's lock (whoever held it)."""
        return self.update_info(image_id, {"lock": None})

    def approve(self, image_id: str, *, by: str) -> ImageRecord:
        """Mark the image's latest ``final`` label as approved by ``by`` (a reviewer).

        Raises:
            ImageNotFound: no image of that id.
            DatastoreError: it has no final label yet.
        """
        latest = self.latest_label(image_id, FINAL)
        if latest is None:
            raise DatastoreError(f"image {image_id!r} has no final label to approve")
        folder = self._folder(image_id)
        document = self._info(folder)
        document["approved"] = {"version": latest.version, "by": by, "at": _now()}
        atomic_write_bytes(folder / _INFO, json.dumps(document, indent=2).encode())
        return self.image(image_id)

    # -- labels ----------------------------------------------------------------------------------

    def save_label(
        self,
        image_id: str,
        label: Volume | Path,
        *,
        tag: str = FINAL,
        saved_by: str,
        info: dict[str, Any] | None = None,
    ) -> LabelVersion:
        """Save a new version of the image's ``tag`` label, checked against the image.

        Raises:
            ImageNotFound: no image of that id.
            DatastoreError: a bad tag, an unreadable label, another geometry than the image's,
                or values that are not label values.
        """
        try:
            check_tag(tag)
        except DatastoreError as exc:
            raise DatastoreError(f"image {image_id[:64]!r}: {exc}") from exc
        image = self.volume(image_id)
        checked = image.with_array(self._checked_label(image_id, image, label))
        recorded = self._before_keeping(image_id, checked, tag)
        folder = self._folder(image_id) / "labels" / tag
        folder.mkdir(parents=True, exist_ok=True)
        version = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        save_volume(checked, folder / f"{version}.nii.gz")
        sidecar = {"saved_by": saved_by, "saved_at": _now(), "info": {**(info or {}), **recorded}}
        atomic_write_bytes(folder / f"{version}.json", json.dumps(sidecar, indent=2).encode())
        return self._version(image_id, tag, folder / f"{version}.json")

    def _before_keeping(self, image_id: str, labels: Volume, tag: str) -> dict[str, Any]:
        """What a datastore does with a checked label before it keeps it (nothing here); what it
        returns joins the version's info."""
        return {}

    def label_versions(self, image_id: str, tag: str) -> list[LabelVersion]:
        """Every saved version of the image's ``tag`` label, oldest first.

        Raises:
            ImageNotFound: no image of that id.
            DatastoreError: a bad tag.
        """
        folder = self._folder(image_id) / "labels" / check_tag(tag)
        sidecars = sorted(folder.glob("[0-9]*.json")) if folder.is_dir() else []
        return [self._version(image_id, tag, path) for path in sidecars]

    def latest_label(self, image_id: str, tag: str) -> LabelVersion | None:
        """The newest version of the image's ``tag`` label, or None."""
        versions = self.label_versions(image_id, tag)
        return versions[-1] if versions else None

    def delete_label(self, image_id: str, tag: str) -> int:
        """Remove every version of the image's ``tag`` label; returns how many there were."""
        folder = self._folder(image_id) / "labels" / check_tag(tag)
        count = len(self.label_versions(image_id, tag))
        if folder.is_dir():
            retired = folder.with_name(f".{tag}.deleted{owner_tag()}{uuid.uuid4().hex}")
            folder.rename(retired)
            shutil.rmtree(retired, ignore_errors=True)
        return count

    def sweep(self, *, max_age: float = 3600.0) -> int:
        """Remove what killed processes left (half-added images, deletes, label temp files)."""
        images = self.root / "images"
        removed = sweep_stale(images, (".*",), max_age=max_age) if images.is_dir() else []
        for labels in images.glob("*/labels") if images.is_dir() else []:
            removed += sweep_stale(labels, (".*",), max_age=max_age)
            for tag in labels.iterdir():
                if tag.is_dir():
                    removed += sweep_stale(tag, (".*",), max_age=max_age)
        return len(removed)

    # -- settings --------------------------------------------------------------------------------

    def label_names(self) -> dict[int, str]:
        """The datastore's label names by value (empty: any integer value is accepted)."""
        path = self.root / _SETTINGS
        if not path.is_file():
            return {}
        labels = json.loads(path.read_text()).get("labels") or {}
        return {int(value): str(name) for value, name in labels.items() if int(value) > 0}

    def set_label_names(self, names: dict[int, str]) -> None:
        """Set the label names (value -> name; 0 is background and left out)."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / _SETTINGS
        document = json.loads(path.read_text()) if path.is_file() else {}
        document["labels"] = {str(v): n for v, n in sorted(names.items()) if v > 0}
        atomic_write_bytes(self.root / _SETTINGS, json.dumps(document, indent=2).encode())

    # -- inside ----------------------------------------------------------------------------------

    def _checked_label(
        self, image_id: str, image: Volume, label: Volume | Path
    ) -> np.ndarray[Any, Any]:
        try:
            volume = (
                label if isinstance(label, Volume) else load_volume(label, max_bytes=self.max_bytes)
            )
        except ImageReadError as exc:
            raise DatastoreError(f"image {image_id!r}: the label cannot be read: {exc}") from exc
        array = np.asarray(volume.array)
        if array.ndim > image.spatial_ndim and all(
            n == 1 for n in array.shape[image.spatial_ndim :]
        ):
            array = array.reshape(array.shape[: image.spatial_ndim])
        if array.shape != tuple(image.shape) or not np.allclose(
            volume.affine, image.affine, atol=_GEOMETRY_TOLERANCE
        ):
            raise DatastoreError(
                f"image {image_id!r}: the label's grid ({list(array.shape)}, spacing "
                f"{[round(s, 3) for s in volume.spacing]}) differs from the image's "
                f"({list(image.shape)}, spacing {[round(s, 3) for s in image.spacing]})"
            )
        return _label_values(image_id, array, self.label_names())

    def _record(self, folder: Path) -> ImageRecord:
        document = self._info(folder)
        image_id = str(document["id"])
        labels = {}
        for tag_folder in (
            sorted((folder / "labels").iterdir()) if (folder / "labels").is_dir() else []
        ):
            if tag_folder.name.startswith("."):
                continue
            sidecars = sorted(tag_folder.glob("[0-9]*.json"))
            if sidecars:
                labels[tag_folder.name] = self._version(image_id, tag_folder.name, sidecars[-1])
        approved = (document.get("approved") or {}).get("version")
        final = labels.get(FINAL)
        if final is None:
            status = ImageStatus.UNLABELLED
        elif approved == final.version:
            status = ImageStatus.APPROVED
        else:
            status = ImageStatus.LABELLED
        info = dict(document.get("info") or {})
        if document.get("approved"):
            info["approved"] = document["approved"]
        return ImageRecord(
            id=image_id,
            name=str(document.get("name") or image_id),
            imported_at=datetime.fromisoformat(document["imported_at"]),
            status=status,
            labels=labels,
            info=info,
            split=document.get("split"),
        )

    def _version(self, image_id: str, tag: str, sidecar: Path) -> LabelVersion:
        document = json.loads(sidecar.read_text())
        return LabelVersion(
            image_id=image_id,
            tag=tag,
            version=sidecar.stem,
            saved_by=str(document.get("saved_by", "")),
            saved_at=datetime.fromisoformat(document["saved_at"]),
            path=sidecar.with_suffix(".nii.gz"),
            info=dict(document.get("info") or {}),
        )

    def _info(self, folder: Path) -> dict[str, Any]:
        try:
            document: dict[str, Any] = json.loads((folder / _INFO).read_text())
        except FileNotFoundError as exc:
            raise ImageNotFound(f"image not found in the datastore ({folder.name})") from exc
        return document

    def _path(self, image_id: str) -> Path:
        return self.root / "images" / hashlib.sha256(image_id.encode()).hexdigest()[:32]

    def _folder(self, image_id: str) -> Path:
        folder = self._path(check_image_id(image_id))
        if not (folder / _INFO).is_file():
            raise ImageNotFound(f"image {image_id[:64]!r} is not in the datastore")
        return folder


def _label_values(
    image_id: str, array: np.ndarray[Any, Any], names: dict[int, str]
) -> np.ndarray[Any, Any]:
    """The label map as uint8/uint16, refusing values that are not integers or not label values."""
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise DatastoreError(f"image {image_id!r}: the label holds non-integer values")
    elif array.dtype.kind not in "biu":
        raise DatastoreError(f"image {image_id!r}: the label's voxels are {array.dtype}")
    values = np.unique(array)
    allowed = set(names) | {0} if names else set(range(65536))
    unknown = [int(v) for v in values if int(v) not in allowed]
    if unknown:
        known = ", ".join(f"{v} {n}" for v, n in sorted(names.items())) or "0-65535"
        raise DatastoreError(
            f"image {image_id!r}: label values {unknown[:10]} are not labels of this datastore "
            f"(0 background, {known})"
        )
    dtype = np.uint8 if not values.size or values.max() <= 255 else np.uint16
    return array.astype(dtype)


def _stem(source: Path) -> str:
    name = source.name
    suffix = suffix_of(source)
    return name[: -len(suffix)] if suffix and name.lower().endswith(suffix) else name


def _display_name(image_id: str, source: Path) -> str:
    """A file name with an extension for clients' downloaders (``<id>.nii.gz``)."""
    suffix = ".zip" if source.is_dir() else suffix_of(source) or ".nii.gz"
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in image_id)[:120]
    return f"{safe}{suffix}"


def _until(lock: dict[str, Any]) -> float:
    try:
        return datetime.fromisoformat(str(lock.get("until"))).timestamp()
    except ValueError:
        return 0.0


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")
