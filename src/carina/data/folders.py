"""A research group's own folder of scans as a dataset: the images and labels in it (MSD
``imagesTr/``+``labelsTr/``, ``images/``+``labels/``, nnU-Net raw ``_0000`` names, a DICOM series
per sub-folder), each pair checked, and a ``dataset.json`` with a fixed, stated split.

The split is by case (or by group: a ``--group-by`` pattern whose first group names the patient,
so that one patient's scans stay on one side), seeded, and written into the ``dataset.json`` with
its rule, so that training, validation, FL and AutoML all see the same one. A ``dataset.json``
that lists only ``training`` (as the MSD ships it) is split by the same rule.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from carina.errors import DatasetError, ImageReadError
from carina.files import atomic_write_bytes
from carina.io import load_volume
from carina.io.formats import READ_SUFFIXES, suffix_of

IMAGE_FOLDERS = ("imagesTr", "images")
LABEL_FOLDERS = ("labelsTr", "labels")
#: How far a label's grid may be from its image's (millimetres, direction cosines).
_GEOMETRY_TOLERANCE = 1e-3
#: What ``init_dataset`` writes anew in a ``dataset.json`` (the rest is kept).
_LISTS = ("training", "validation", "test", "numTraining", "numTest", "split")


@dataclass(frozen=True)
class SplitRule:
    """How cases are split: ``validation`` of them (at least one when there are two), chosen at
    random with ``seed``, whole groups at a time when ``group`` (a regular expression whose first
    group, searched in the image's file name, names the patient) is given."""

    validation: float = 0.2
    seed: int = 0
    group: str | None = None

    def describe(self) -> dict[str, Any]:
        """The rule as ``dataset.json`` states it."""
        return {
            "validation_fraction": self.validation,
            "seed": self.seed,
            "group_by": self.group,
            "by": "patient group" if self.group else "case",
        }


@dataclass
class InitReport:
    """What ``init_dataset`` found: the cases per part, what it skipped and why."""

    manifest: Path
    training: int = 0
    validation: int = 0
    unlabelled: int = 0
    skipped: list[str] = field(default_factory=list)
    labels: dict[int, str] = field(default_factory=dict)
    layout: str = ""


def image_sources(folder: Path) -> list[Path]:
    """Image files and DICOM series folders directly in ``folder``, by name."""
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.name in (*LABEL_FOLDERS, *IMAGE_FOLDERS):
            continue
        series = entry.is_dir() and any(p.is_file() for p in entry.rglob("*"))
        if series or (entry.is_file() and suffix_of(entry) in READ_SUFFIXES):
            found.append(entry)
    return found


def matching_label(labels: Path, image: Path) -> Path | None:
    """The label of ``image`` in ``labels``: the same name, or the same stem with any suffix
    (nnU-Net's ``_0000`` channel suffix dropped)."""
    if (labels / image.name).exists():
        return labels / image.name
    stem = image.name[: -len(suffix_of(image))] if suffix_of(image) else image.name
    for candidate in (stem, stem.removesuffix("_0000")):
        for suffix in READ_SUFFIXES:
            if (labels / f"{candidate}{suffix}").exists():
                return labels / f"{candidate}{suffix}"
    return None


def split_cases(
    cases: list[dict[str, Any]], rule: SplitRule
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``cases`` as (training, validation) by ``rule``; the same cases and rule always give the
    same split, whatever order the cases come in.

    Raises:
        DatasetError: fewer than two cases (or groups), or a group pattern that does not compile.
    """
    pattern = _group_pattern(rule.group)
    groups: dict[str, list[dict[str, Any]]] = {}
    for case in sorted(cases, key=lambda c: str(c["image"])):
        name = Path(str(case["image"])).name
        match = pattern.search(name) if pattern else None
        key = (match.group(1) if match and match.groups() else match.group(0)) if match else name
        groups.setdefault(key, []).append(case)
    if len(groups) < 2:
        raise DatasetError(
            f"{len(cases)} labelled case(s) in {len(groups)} group(s): a training/validation "
            "split needs at least two"
        )
    keys = sorted(groups)
    random.Random(rule.seed).shuffle(keys)
    count = min(len(keys) - 1, max(1, math.ceil(rule.validation * len(keys))))
    chosen = set(keys[:count])
    train = [c for k in sorted(groups) if k not in chosen for c in groups[k]]
    val = [c for k in sorted(groups) if k in chosen for c in groups[k]]
    return train, val


def init_dataset(
    folder: Path,
    *,
    rule: SplitRule | None = None,
    labels: list[str] | None = None,
    modality: str | None = None,
    max_bytes: int,
    progress: Callable[[str], None] | None = None,
) -> InitReport:
    """Find the pairs in ``folder``, check each, and write ``folder/dataset.json`` (paths relative
    to the folder). A pair that cannot be used (unreadable, another grid, values that are not
    labels) is skipped with the reason; images without a label are listed under ``test``.

    Raises:
        DatasetError: no image, no usable pair, or fewer than two to split.
    """
    rule = rule or SplitRule()
    say = progress or (lambda _line: None)
    manifest = folder / "dataset.json"
    existing = _read_manifest(manifest)
    layout, pairs = _pairs(folder)
    report = InitReport(manifest, layout=layout)
    usable, unlabelled, values = _checked_pairs(pairs, folder, report, say, max_bytes=max_bytes)
    names = _label_names(
        existing, labels, max((max(v, default=0) for v in values.values()), default=0)
    )
    for case in list(usable):
        unknown = sorted(values[case["image"]] - {0, *names})
        if unknown:
            usable.remove(case)
            report.skipped.append(
                f"{Path(case['image']).name}: label values {unknown[:8]} are not labels"
            )
    if not usable:
        raise DatasetError(
            f"{folder}: no image with a usable label ({len(report.skipped)} skipped)"
        )
    train, val = split_cases(usable, rule)
    document = {
        **{k: v for k, v in existing.items() if k not in _LISTS},
        "name": existing.get("name") or folder.name,
        "labels": {"0": "background", **{str(v): n for v, n in sorted(names.items())}},
        **({"modality": {"0": modality}} if modality else {}),
        "split": rule.describe(),
        "numTraining": len(train) + len(val),
        "training": train,
        "validation": val,
        **({"numTest": len(unlabelled), "test": unlabelled} if unlabelled else {}),
    }
    atomic_write_bytes(manifest, (json.dumps(document, indent=2) + "\n").encode())
    report.training, report.validation, report.unlabelled = len(train), len(val), len(unlabelled)
    report.labels = names
    return report


def _checked_pairs(
    pairs: list[tuple[Path, Path | None]],
    folder: Path,
    report: InitReport,
    say: Callable[[str], None],
    *,
    max_bytes: int,
) -> tuple[list[dict[str, str]], list[str], dict[str, set[int]]]:
    """The usable cases (relative paths), the unlabelled images, and each case's label values;
    the pairs that cannot be used go to ``report.skipped`` with the reason."""
    usable, unlabelled, values = [], [], {}
    for image, label in pairs:
        if label is None:
            unlabelled.append(_relative(image, folder))
            continue
        problem, found = _check_pair(image, label, max_bytes=max_bytes)
        say(f"checked {image.name}" + (" (skipped)" if problem else ""))
        if problem:
            report.skipped.append(f"{image.name}: {problem}")
            continue
        case = {"image": _relative(image, folder), "label": _relative(label, folder)}
        usable.append(case)
        values[case["image"]] = found
    return usable, unlabelled, values


def _pairs(folder: Path) -> tuple[str, list[tuple[Path, Path | None]]]:
    """The layout's name and each image with its label (or None)."""
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a folder")
    images = next((folder / n for n in IMAGE_FOLDERS if (folder / n).is_dir()), None)
    labels = next((folder / n for n in LABEL_FOLDERS if (folder / n).is_dir()), None)
    if images is None:
        raise DatasetError(
            f"{folder}: no images/ or imagesTr/ folder (with labels/ or labelsTr/ beside it)"
        )
    sources = image_sources(images)
    channels = [s for s in sources if re.search(r"_000[1-9]\.", s.name)]
    sources = [s for s in sources if s not in channels]
    if not sources:
        raise DatasetError(f"{images}: no image found (NIfTI, NRRD, MHA or DICOM)")
    nnunet = any(s.name.split(".")[0].endswith("_0000") for s in sources)
    layout = "nnU-Net raw" if nnunet else f"{images.name}/ + {labels.name if labels else 'no'}/"
    if channels:
        layout += f" ({len(channels)} extra channel files left out: one channel per case)"
    return layout, [(s, matching_label(labels, s) if labels else None) for s in sources]


def _check_pair(image: Path, label: Path, *, max_bytes: int) -> tuple[str | None, set[int]]:
    """Why the pair cannot be used (None: it can), and the label's values."""
    try:
        volume = load_volume(image, max_bytes=max_bytes)
        mask = load_volume(label, max_bytes=max_bytes)
    except ImageReadError as exc:
        return str(exc.reason), set()
    array = np.asarray(mask.array)
    if array.shape != tuple(volume.shape) or not np.allclose(
        mask.affine, volume.affine, atol=_GEOMETRY_TOLERANCE
    ):
        return (
            f"the label's grid {list(array.shape)} (spacing {[round(s, 3) for s in mask.spacing]}) "
            f"is not the image's {list(volume.shape)} (spacing "
            f"{[round(s, 3) for s in volume.spacing]})"
        ), set()
    if array.dtype.kind == "f" and not np.array_equal(array, np.round(array)):
        return "the label holds values that are not integers", set()
    found = {int(v) for v in np.unique(array)}
    if found and min(found) < 0:
        return "the label holds negative values", set()
    return None, found


def _label_names(existing: dict[str, Any], given: list[str] | None, high: int) -> dict[int, str]:
    """Label names: ``--labels``, else the existing ``dataset.json``'s, else ``label N`` up to
    ``high``, the largest value of the labels."""
    if given:
        return dict(enumerate(given, start=1))
    listed = existing.get("labels")
    if isinstance(listed, dict) and listed:
        try:
            return {int(k): str(v) for k, v in listed.items() if int(k) > 0}
        except ValueError as exc:
            raise DatasetError("dataset.json: 'labels' must map values to names") from exc
    return {value: f"label {value}" for value in range(1, high + 1)}


def _read_manifest(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        document = json.loads(path.read_text())
    except ValueError as exc:
        raise DatasetError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise DatasetError(f"{path}: not a JSON object")
    return document


def _relative(path: Path, folder: Path) -> str:
    return path.relative_to(folder).as_posix()


def _group_pattern(group: str | None) -> re.Pattern[str] | None:
    if not group:
        return None
    try:
        return re.compile(group)
    except re.error as exc:
        raise DatasetError(f"--group-by {group!r} is not a regular expression: {exc}") from exc
