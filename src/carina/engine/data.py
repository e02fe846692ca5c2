"""Training and validation cases: ``--dataset``, the archive's datalist, or a shipped dataset."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carina.archive import Archive
from carina.archive.schema import DatasetSettings, read_json
from carina.data.folders import SplitRule, split_cases
from carina.errors import ConfigError


@dataclass(frozen=True)
class CaseLists:
    """The cases of one datalist.

    Attributes:
        datalist: the datalist file.
        train: ``{"image": path, "label": path}`` items for training.
        val: the same for validation (the held-out half for the shipped datasets).
        labels: label value -> name when the datalist names them (MSD ``labels``).
        name: the dataset's name when it has one.
        structures: ``dataset:label name`` of each labelled structure.
    """

    datalist: Path
    train: list[dict[str, Any]]
    val: list[dict[str, Any]]
    labels: dict[int, str] | None
    name: str | None
    structures: list[str]
    notes: list[str] = dataclasses.field(default_factory=list)


def resolve_cases(
    archive: Archive,
    settings: DatasetSettings,
    *,
    override: Path | None = None,
    data_dir: Path,
    structures: bool = False,
    trained: bool = False,
) -> CaseLists:
    """Find the datalist and check that every file it names exists.

    Order: ``override`` (a folder holding ``dataset.json``, or a datalist file), then the
    archive's ``dataset.datalist`` (relative to the archive), then the shipped dataset
    ``dataset.name`` (exported under ``data_dir`` on first use; a list of names merges them).
    With ``structures``, every case is repeated once per labelled structure (see
    :func:`per_structure`). With ``trained`` (validation), the dataset the weights were trained on
    with ``--dataset`` comes before the archive's (:func:`record_trained_on`). A datalist without
    validation cases is split by its stated rule (or the default one), with a note.

    Raises:
        ConfigError: no dataset given, a missing datalist or case file, or an empty key.
    """
    if override is None and not settings.datalist and isinstance(settings.name, list):
        parts = [
            resolve_cases(
                archive,
                settings.model_copy(update={"name": name}),
                data_dir=data_dir,
                structures=structures,
            )
            for name in settings.name
        ]
        return CaseLists(
            datalist=parts[0].datalist,
            train=[case for part in parts for case in part.train],
            val=[case for part in parts for case in part.val],
            labels=None,
            name="+".join(settings.name),
            structures=[s for part in parts for s in part.structures],
        )
    if override is None and trained:
        override = trained_datalist(archive)
        notes = [f"the weights were trained on {override}: using it"] if override else []
    else:
        notes = []
    datalist, root = _datalist(archive, settings, override=override, data_dir=data_dir)
    document = read_json(datalist)
    train, val = _parts(document, settings, datalist, root, notes)
    labels = document.get("labels") if isinstance(document, dict) else None
    names = {int(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else None
    name = document.get("name") if isinstance(document, dict) else None
    listed = [
        f"{name or datalist.parent.name}:{v}" for k, v in sorted((names or {}).items()) if k > 0
    ]
    cases = CaseLists(datalist, train, val, names, name, listed, notes)
    return per_structure(cases) if structures else cases


def _parts(
    document: Any, settings: DatasetSettings, datalist: Path, root: Path, notes: list[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The training and validation cases; a datalist without validation cases is split by its
    stated rule (or the default one), with a note."""
    train = _cases(document, settings.train_key, datalist, root)
    if isinstance(document, dict) and document.get(settings.val_key):
        return train, _cases(document, settings.val_key, datalist, root)
    rule = _split_rule(document if isinstance(document, dict) else {}, datalist)
    train, val = split_cases(train, rule)
    notes.append(
        f"{datalist.name} lists no {settings.val_key!r} cases: {len(val)} of the "
        f"{settings.train_key!r} ones validate (seed {rule.seed}, fraction "
        f"{rule.validation}; `carina dataset init` writes the split into the file)"
    )
    return train, val


def _datalist(
    archive: Archive, settings: DatasetSettings, *, override: Path | None, data_dir: Path
) -> tuple[Path, Path]:
    """The datalist and the folder its paths are relative to (one dataset).

    Raises:
        ConfigError: no dataset given, or the datalist does not exist.
    """
    from carina.data import ensure_dataset

    if override is not None:
        datalist = override / "dataset.json" if override.is_dir() else override
        root = datalist.parent
    elif settings.datalist:
        datalist = Path(settings.datalist)
        datalist = datalist if datalist.is_absolute() else archive.layout.root / datalist
        root = Path(settings.root) if settings.root else datalist.parent
        if settings.root and not root.is_absolute():
            root = archive.layout.root / root
    elif isinstance(settings.name, str) and settings.name:
        datalist = ensure_dataset(settings.name, data_dir / settings.name)
        root = datalist.parent
    else:
        raise ConfigError(
            "config_train.json",
            "dataset",
            "no data: set dataset.datalist or dataset.name, or pass --dataset",
        )
    if not datalist.is_file():
        raise ConfigError(datalist.name, "", f"the datalist {datalist} does not exist")
    return datalist, root


#: Where training records the datalist it was given with ``--dataset`` (``models/``).
TRAINED_ON = "trained_on.json"


def record_trained_on(archive: Archive, dataset: Path | None) -> None:
    """Remember the ``--dataset`` the weights were trained on (so that a plain ``validate``
    scores on it), or forget it when they were trained on the archive's own."""
    path = archive.layout.root / "models" / TRAINED_ON
    if dataset is None:
        path.unlink(missing_ok=True)
        return
    datalist = dataset / "dataset.json" if dataset.is_dir() else dataset
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"datalist": str(datalist.resolve())}, indent=2) + "\n")


def trained_datalist(archive: Archive) -> Path | None:
    """The datalist recorded by :func:`record_trained_on`, when it still exists."""
    path = archive.layout.root / "models" / TRAINED_ON
    try:
        recorded = Path(json.loads(path.read_text())["datalist"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return recorded if recorded.is_file() else None


def _split_rule(document: dict[str, Any], datalist: Path) -> SplitRule:
    """The split a ``dataset.json`` states (``split``), else the default one."""
    stated = document.get("split")
    if not isinstance(stated, dict):
        return SplitRule()
    try:
        return SplitRule(
            validation=float(stated.get("validation_fraction", 0.2)),
            seed=int(stated.get("seed", 0)),
            group=stated.get("group_by") or None,
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(datalist.name, "split", f"not a split rule ({exc})") from exc


def _cases(document: Any, key: str, datalist: Path, root: Path) -> list[dict[str, Any]]:
    items = document.get(key) if isinstance(document, dict) else None
    if not items:
        raise ConfigError(datalist.name, key, "no cases under this key")
    cases = []
    for index, item in enumerate(items):
        entry = {"image": item} if isinstance(item, str) else dict(item)
        for field in ("image", "label"):
            if field not in entry:
                if field == "label":
                    continue
                raise ConfigError(datalist.name, f"{key}.{index}", "the case has no image")
            path = Path(entry[field])
            path = path if path.is_absolute() else (root / path)
            if not path.exists():
                raise ConfigError(
                    datalist.name, f"{key}.{index}.{field}", f"file {entry[field]} does not exist"
                )
            entry[field] = str(path.resolve())
        cases.append(entry)
    return cases


def per_structure(cases: CaseLists) -> CaseLists:
    """One case per labelled structure: each item gains ``label_value`` (for ``SelectLabeld``).

    Structures absent from a case's label map are dropped when the label files are read.

    Raises:
        ConfigError: the datalist does not name its labels.
    """
    if cases.labels is None and not all("label_value" in case for case in cases.train):
        raise ConfigError(cases.datalist.name, "labels", "per-structure training needs label names")
    values = [value for value in (cases.labels or {}) if value > 0]

    def expand(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {**item, "label_value": value}
            for item in items
            for value in ([item["label_value"]] if "label_value" in item else values)
        ]

    return CaseLists(
        cases.datalist,
        expand(cases.train),
        expand(cases.val),
        cases.labels,
        cases.name,
        cases.structures,
    )


def dataset_images(archive: Archive, *, override: Path | None, data_dir: Path) -> DatasetImages:
    """The images ``carina infer`` runs when it is given a dataset instead of files: the
    dataset's ``test`` images (MSD ``imagesTs``, the unlabelled images ``carina dataset init``
    found), else its validation cases'. The dataset is ``override``, else the one the weights were
    trained on, else the archive's (as :func:`resolve_cases`).

    Raises:
        ConfigError: no dataset, a missing datalist or a missing file.
    """
    settings = archive.train_config().settings.dataset
    cases = resolve_cases(archive, settings, override=override, data_dir=data_dir, trained=True)
    document = read_json(cases.datalist)
    if isinstance(document, dict) and document.get("test"):
        chosen = override or trained_datalist(archive)
        _, root = _datalist(archive, settings, override=chosen, data_dir=data_dir)
        tests = _cases(document, "test", cases.datalist, root)
        images = [Path(case["image"]) for case in tests]
        return DatasetImages(cases.datalist, images, "test")
    images = [Path(case["image"]) for case in cases.val]
    return DatasetImages(cases.datalist, images, "validation")


@dataclass(frozen=True)
class DatasetImages:
    """The images of a dataset to run a model on, and which of its lists they are."""

    datalist: Path
    images: list[Path]
    part: str

    def describe(self) -> str:
        """``N test images of DATALIST``."""
        return f"{len(self.images)} {self.part} images of {self.datalist}"
