"""Moving a datastore to and from folders: import a folder of images (with their labels), export
the final labels in the Medical Segmentation Decathlon layout for training elsewhere.

Import accepts what ``carina data export`` writes (``imagesTr/`` + ``labelsTr/`` + ``dataset.json``)
and the plain ``images/`` + ``labels/`` layout, or a folder of images alone; a label is matched
to its image by file name and saved as the ``final`` label by ``import``. Sub-folders of DICOM
files are imported as one series each.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from carina.data.folders import IMAGE_FOLDERS, LABEL_FOLDERS, image_sources, matching_label
from carina.datastore.local import LocalDatastore
from carina.datastore.records import FINAL, SPLITS
from carina.errors import DatastoreError
from carina.files import atomic_write_bytes
from carina.io import load_volume, save_volume


@dataclass
class ImportReport:
    """What an import did: the images and labels added, and what was skipped with why."""

    images: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def import_folder(
    store: LocalDatastore,
    folder: Path,
    *,
    progress: Callable[[str], None] | None = None,
) -> ImportReport:
    """Add every image of ``folder`` (and its label, when one matches) to ``store``.

    An image already in the datastore, or one that cannot be read, is skipped with the reason;
    the rest are imported. A ``dataset.json`` with ``labels`` sets the datastore's label names
    when it has none.

    Raises:
        DatastoreError: ``folder`` holds no image.
    """
    report = progress or (lambda _message: None)
    images_dir = next((folder / n for n in IMAGE_FOLDERS if (folder / n).is_dir()), folder)
    labels_dir = next((folder / n for n in LABEL_FOLDERS if (folder / n).is_dir()), None)
    _adopt_label_names(store, folder / "dataset.json")
    splits = _listed_splits(folder / "dataset.json")
    sources = image_sources(images_dir)
    if not sources:
        raise DatastoreError(f"{folder.name}: no image found (NIfTI, NRRD, MHA or DICOM)")
    done = ImportReport()
    for source in sources:
        try:
            record = store.add_image(source)
        except DatastoreError as exc:
            done.skipped.append(str(exc))
            report(f"skipped {source.name}: {exc}")
            continue
        done.images.append(record.id)
        if source.name in splits:
            store.set_split(record.id, splits[source.name])
        label = matching_label(labels_dir, source) if labels_dir else None
        if label is not None:
            try:
                store.save_label(record.id, label, tag=FINAL, saved_by="import")
                done.labels.append(record.id)
            except DatastoreError as exc:
                done.skipped.append(str(exc))
        report(f"imported {record.id}" + (" with its label" if record.id in done.labels else ""))
    return done


def export_final_labels(store: LocalDatastore, folder: Path) -> Path:
    """Write every image with a ``final`` label, and that label, in the MSD layout; returns the
    ``dataset.json``. Images are written as NIfTI on their own grid.

    Raises:
        DatastoreError: no image has a final label.
    """
    labelled = [r for r in store.images() if FINAL in r.labels]
    if not labelled:
        raise DatastoreError("no image has a final label to export")
    entries = []
    for index, record in enumerate(labelled):
        stem = f"case_{index:04d}"
        for sub, volume in (
            ("imagesTr", store.volume(record.id)),
            ("labelsTr", load_volume(record.labels[FINAL].path)),
        ):
            (folder / sub).mkdir(parents=True, exist_ok=True)
            save_volume(volume, folder / sub / f"{stem}.nii.gz")
        entries.append(
            {
                "image": f"./imagesTr/{stem}.nii.gz",
                "label": f"./labelsTr/{stem}.nii.gz",
                "id": record.id,
                "label_version": record.labels[FINAL].version,
            }
        )
    names = store.label_names()
    document = {
        "name": folder.name,
        "description": "final labels exported from a Carina datastore",
        "tensorImageSize": "3D",
        "labels": {"0": "background", **{str(v): n for v, n in sorted(names.items())}},
        "numTraining": len(entries),
        "training": entries,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    manifest = folder / "dataset.json"
    atomic_write_bytes(manifest, (json.dumps(document, indent=2) + "\n").encode())
    return manifest


def _listed_splits(manifest: Path) -> dict[str, str]:
    """The split of each image file a ``dataset.json`` lists (by file name)."""
    if not manifest.is_file():
        return {}
    try:
        document = json.loads(manifest.read_text())
        return {
            Path(str(entry["image"])).name: split
            for split in SPLITS
            for entry in document.get(split) or []
            if isinstance(entry, dict) and "image" in entry
        }
    except (ValueError, AttributeError, TypeError) as exc:
        raise DatastoreError(
            f"{manifest.name}: its training/validation lists are malformed"
        ) from exc


def _adopt_label_names(store: LocalDatastore, manifest: Path) -> None:
    if store.label_names() or not manifest.is_file():
        return
    try:
        labels = json.loads(manifest.read_text()).get("labels") or {}
        names = {int(value): str(name) for value, name in labels.items()}
    except (ValueError, AttributeError, TypeError) as exc:
        raise DatastoreError(f"{manifest.name}: 'labels' is not a map of values to names") from exc
    store.set_label_names({v: n for v, n in names.items() if v > 0})
