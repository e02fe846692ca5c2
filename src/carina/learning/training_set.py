"""The training data a job takes from a datastore: every image with a ``final`` label, in the
training or validation part that image was given once and keeps.

The rule, stated once: an image imported with a ``dataset.json`` keeps the list it was in; any
other image is put in a part the first time a job sees it with a final label: in ``validation``
while no labelled image is there yet, then when the first byte of the sha256 of its id is below
52 (about one in five), else in ``training``. The part is stored with the image, so later jobs
(and the promotion's comparison) score on the same validation images.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from carina.datastore import FINAL, ImageRecord, LocalDatastore
from carina.errors import DatastoreError
from carina.files import atomic_write_bytes

#: Stated in the module docstring; stored in every job's dataset.json.
SPLIT_RULE = (
    "fixed per image: the dataset.json list it was imported with; else validation while none "
    "is, then when sha256(id)[0] < 52, else training"
)


def assign_splits(store: LocalDatastore) -> list[ImageRecord]:
    """The images with a final label, each with its split (decided and stored when missing)."""
    labelled = [r for r in store.images() if FINAL in r.labels]
    has_validation = any(r.split == "validation" for r in labelled)
    decided = []
    for record in labelled:
        if record.split is None:
            digest = hashlib.sha256(record.id.encode()).digest()[0]
            split = "validation" if not has_validation or digest < 52 else "training"
            has_validation = has_validation or split == "validation"
            record = store.set_split(record.id, split)
        decided.append(record)
    return decided


def write_training_set(store: LocalDatastore, folder: Path) -> Path:
    """``folder/dataset.json`` listing the datastore's final labels by split (the files stay in
    the datastore; the latest final version of each image is used, and named in the list).

    Raises:
        DatastoreError: no image with a final label in training, or none in validation.
    """
    records = assign_splits(store)
    parts: dict[str, list[dict[str, str]]] = {"training": [], "validation": []}
    for record in records:
        final = record.labels[FINAL]
        parts[str(record.split)].append(
            {
                "image": str(store.pinned_image_path(record.id, folder).resolve()),
                "label": str(final.path.resolve()),
                "id": record.id,
                "label_version": final.version,
            }
        )
    for split, entries in parts.items():
        if not entries:
            raise DatastoreError(
                f"no image with a final label is in {split}: save final labels for more images"
            )
    names = store.label_names()
    document = {
        "name": "datastore",
        "labels": {"0": "background", **{str(v): n for v, n in sorted(names.items())}},
        "split_rule": SPLIT_RULE,
        **parts,
    }
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "dataset.json"
    atomic_write_bytes(manifest, (json.dumps(document, indent=2) + "\n").encode())
    return manifest
