"""Writing a shipped dataset in the Medical Segmentation Decathlon (MSD) layout.

``DIR/imagesTr/<name>_train.nii.gz``, ``DIR/imagesTr/<name>_heldout.nii.gz``, the same names under
``labelsTr/``, and ``DIR/dataset.json`` with the label names, a ``training`` list (the
training half) and a ``validation`` list (the held-out half), as MONAI's
``load_decathlon_datalist`` reads them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from carina import __version__
from carina.data.datasets import Case, get_dataset, split_heldout
from carina.errors import DatasetError
from carina.files import atomic_write_bytes
from carina.io import save_volume


def export_dataset(
    name: str, folder: str | Path, *, progress: Callable[[str], None] | None = None
) -> Path:
    """Write dataset ``name`` to ``folder`` in the MSD layout and return its ``dataset.json``.

    Re-exporting the same dataset into the same folder rewrites its files; a folder that already
    holds another dataset is refused, so nothing of it is lost.

    Raises:
        DatasetError: unknown dataset, missing source package, or a folder holding another dataset.
    """
    spec = get_dataset(name)
    folder = Path(folder)
    manifest = folder / "dataset.json"
    if manifest.exists():
        try:
            existing = json.loads(manifest.read_text()).get("name")
        except (ValueError, AttributeError):
            existing = "an unreadable dataset.json"
        if existing != spec.name:
            raise DatasetError(f"{folder.name} already holds {existing!r}; choose another folder")
    report = progress or (lambda _message: None)
    report(f"building {spec.name}")
    split = split_heldout(spec.build(), spec.labels)
    entries: dict[str, dict[str, str]] = {}
    for part, case in (("train", split.train), ("heldout", split.heldout)):
        entries[part] = _write_case(folder, f"{spec.name}_{part}", case)
        report(f"wrote {entries[part]['image']} and {entries[part]['label']}")
    document: dict[str, Any] = {
        "name": spec.name,
        "description": spec.description,
        "reference": "shipped sample data; see licence",
        "licence": "; ".join(spec.licences),
        "release": f"carina {__version__}",
        "tensorImageSize": "3D",
        "modality": {"0": spec.modality},
        "labels": {str(value): label for value, label in spec.labels.items()},
        "numTraining": 1,
        "numTest": 0,
        "training": [entries["train"]],
        "validation": [entries["heldout"]],
        "test": [],
        "split": {
            "rule": "cut at the middle voxel plane of the left-right axis; lower-index half trains",
            "axis": split.axis,
            "axis_code": split.axis_code,
            "index": split.index,
            "subjects": 1,
        },
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    atomic_write_bytes(manifest, (json.dumps(document, indent=2) + "\n").encode())
    return manifest


def _write_case(folder: Path, stem: str, case: Case) -> dict[str, str]:
    entry = {}
    for kind, volume in (("image", case.image), ("label", case.label)):
        sub = folder / ("imagesTr" if kind == "image" else "labelsTr")
        sub.mkdir(parents=True, exist_ok=True)
        save_volume(volume, sub / f"{stem}.nii.gz")
        entry[kind] = f"./{sub.name}/{stem}.nii.gz"
    return entry


def ensure_dataset(name: str, folder: str | Path) -> Path:
    """The ``dataset.json`` of dataset ``name`` in ``folder``, exported there first if missing."""
    manifest = Path(folder) / "dataset.json"
    if manifest.is_file():
        try:
            if json.loads(manifest.read_text()).get("name") == name:
                return manifest
        except (ValueError, AttributeError):
            pass
    Path(folder).mkdir(parents=True, exist_ok=True)
    return export_dataset(name, folder)
