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
    """

    datalist: Path
    train: list[dict[str, Any]]
    val: list[dict[str, Any]]
    labels: dict[int, str] | None
    name: str | None


def resolve_cases(
    archive: Archive,
    settings: DatasetSettings,
    *,
    override: Path | None = None,
    data_dir: Path,
) -> CaseLists:
    """Find the datalist and check that every file it names exists.

    Order: ``override`` (a folder holding ``dataset.json``, or a datalist file), then the
    archive's ``dataset.datalist`` (relative to the archive), then the shipped dataset
    ``dataset.name`` (exported under ``data_dir`` on first use).

    Raises:
        ConfigError: no dataset given, a missing datalist or case file, or an empty key.
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
    elif settings.name:
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
    document = read_json(datalist)
    train = _cases(document, settings.train_key, datalist, root)
    val = _cases(document, settings.val_key, datalist, root)
    labels = document.get("labels") if isinstance(document, dict) else None
    return CaseLists(
        datalist=datalist,
        train=train,
        val=val,
        labels={int(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else None,
        name=document.get("name") if isinstance(document, dict) else None,
    )


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
