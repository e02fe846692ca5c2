"""Training and validation cases: ``--dataset``, the archive's datalist, or a shipped dataset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carina.archive import Archive
from carina.archive.schema import DatasetSettings, read_json
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


def resolve_cases(
    archive: Archive,
    settings: DatasetSettings,
    *,
    override: Path | None = None,
    data_dir: Path,
    structures: bool = False,
) -> CaseLists:
    """Find the datalist and check that every file it names exists.

    Order: ``override`` (a folder holding ``dataset.json``, or a datalist file), then the
    archive's ``dataset.datalist`` (relative to the archive), then the shipped dataset
    ``dataset.name`` (exported under ``data_dir`` on first use; a list of names merges them).
    With ``structures``, every case is repeated once per labelled structure (see
    :func:`per_structure`).

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
    datalist, root = _datalist(archive, settings, override=override, data_dir=data_dir)
    document = read_json(datalist)
    train = _cases(document, settings.train_key, datalist, root)
    val = _cases(document, settings.val_key, datalist, root)
    labels = document.get("labels") if isinstance(document, dict) else None
    names = {int(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else None
    name = document.get("name") if isinstance(document, dict) else None
    listed = [
        f"{name or datalist.parent.name}:{v}" for k, v in sorted((names or {}).items()) if k > 0
    ]
    cases = CaseLists(datalist, train, val, names, name, listed)
    return per_structure(cases) if structures else cases


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
        root = root if root.is_absolute() else archive.layout.root / root
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
