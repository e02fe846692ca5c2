"""Finding DICOM datasets in a file, a folder (searched recursively) or a zip, and the series
they form.

A folder a user points at often holds more than one series (a CT with its scout, a study of MR
sequences, one sub-folder per patient): :func:`find_series` lists them, parsing headers only, so
that one can be chosen and read alone (:func:`carina.io.dicom.read_series` with ``files``).
"""

from __future__ import annotations

import io
import logging
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carina.errors import ImageReadError, UnsafeZipError
from carina.files import checked_members, iter_member_bytes

log = logging.getLogger(__name__)

IGNORED_NAMES = frozenset({"DICOMDIR", "LOCKFILE", "VERSION"})
#: Modalities of series that are not images to segment (results, reports, plans, ...).
NOT_IMAGES = frozenset(
    {"SEG", "SR", "PR", "KO", "DOC", "REG", "FID", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD",
     "AU", "ECG", "PLAN", "RWV"}
)  # fmt: skip


@dataclass(frozen=True)
class SeriesInfo:
    """One image series found in a folder or zip.

    Attributes:
        uid: its SeriesInstanceUID (empty when the files have none).
        modality, description, number: Modality, SeriesDescription, SeriesNumber ("" if absent).
        source: the folder or zip it was found in.
        files: its files (empty for a series inside a zip).
        images: how many image objects (files) it has.
    """

    uid: str
    modality: str
    description: str
    number: str
    source: Path
    files: tuple[Path, ...]
    images: int

    def describe(self) -> str:
        """One line: UID, modality, description, how many images, where."""
        where = _common_folder(self.files, self.source) if self.files else ""
        parts = [self.modality or "?", f"'{self.description}'" if self.description else ""]
        shown = " ".join(p for p in parts if p)
        place = f" in {where}" if where and where != "." else ""
        return f"{self.uid or '(no UID)'} {shown} ({self.images} images){place}"


def find_series(path: Path, *, max_bytes: int) -> list[SeriesInfo]:
    """The image series in a DICOM file, folder or zip (results such as SEG, SR and RT objects
    left out), the largest first. Files that are not DICOM are skipped.

    Raises:
        ImageReadError: an unsafe or corrupt zip.
    """
    groups: dict[str, list[tuple[Path | None, Any]]] = {}
    if path.is_dir():
        found: Iterator[tuple[Path | None, Any]] = (
            (file, _header(file)) for file in folder_files(path)
        )
    else:
        found = ((None, dataset) for _, dataset in datasets(path, max_bytes=max_bytes))
    for file, dataset in found:
        if dataset is None or "Rows" not in dataset:
            continue
        if str(dataset.get("Modality", "")).upper() in NOT_IMAGES:
            continue
        groups.setdefault(str(dataset.get("SeriesInstanceUID", "")), []).append((file, dataset))
    series = [_info(uid, members, path) for uid, members in groups.items()]
    return sorted(series, key=lambda s: (-s.images, s.uid))


def folder_files(folder: Path) -> list[Path]:
    """The files under ``folder`` that may be DICOM: not hidden, not DICOMDIR and the like."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith(".") and p.name.upper() not in IGNORED_NAMES
    )


def datasets(
    path: Path, *, max_bytes: int, files: Sequence[Path] | None = None
) -> Iterator[tuple[str, Any]]:
    """``(file name, dataset)`` of each DICOM file of a file, folder, zip, or of ``files``."""
    if files is not None or path.is_dir():
        for file in files if files is not None else folder_files(path):
            dataset = parse_dataset(
                file.name, file, force=file.suffix.lower() == ".dcm", strict=False
            )
            if dataset is not None:
                yield file.name, dataset
        return
    if not path.exists():
        raise ImageReadError(path, "no such file or folder")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "the file is empty")
    if zipfile.is_zipfile(path):
        yield from _zip_datasets(path, max_bytes=max_bytes)
        return
    dataset = parse_dataset(path.name, path, force=True, strict=True)
    if dataset is not None:
        yield path.name, dataset


def parse_dataset(
    name: str,
    source: Path | io.BytesIO,
    *,
    force: bool,
    strict: bool,
    headers_only: bool = False,
) -> Any:
    """A parsed dataset, or None for a file that is not DICOM (an error when ``strict``);
    ``headers_only`` stops before the pixel data."""
    import pydicom

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dataset = pydicom.dcmread(source, force=force, stop_before_pixels=headers_only)
        for warning in caught:
            log.debug("DICOM file %s: %s", "<uploaded>", warning.message)
    except (OSError, *malformed_errors()) as exc:  # type: ignore[misc]
        if strict:
            raise ImageReadError(name, f"not a readable DICOM file ({type(exc).__name__})") from exc
        return None
    if strict and "SOPClassUID" not in dataset and "PixelData" not in dataset:
        raise ImageReadError(name, "not a DICOM file (no SOP class and no pixel data)")
    return dataset


def malformed_errors() -> tuple[type[Exception], ...]:
    """What pydicom raises on malformed data, besides Carina's own errors."""
    from pydicom.errors import BytesLengthException, InvalidDicomError

    return (
        ValueError, TypeError, AttributeError, KeyError, IndexError, OverflowError,
        NotImplementedError, EOFError, BytesLengthException, InvalidDicomError,
    )  # fmt: skip


def _zip_datasets(path: Path, *, max_bytes: int) -> Iterator[tuple[str, Any]]:
    try:
        with zipfile.ZipFile(path) as archive:
            members = checked_members(archive, max_bytes=max_bytes)
            for info, data in iter_member_bytes(archive, members, max_bytes=max_bytes):
                name = Path(info.filename).name
                if name.startswith(".") or name.upper() in IGNORED_NAMES:
                    continue
                dataset = parse_dataset(name, io.BytesIO(data), force=False, strict=False)
                if dataset is not None:
                    yield name, dataset
    except UnsafeZipError as exc:
        raise ImageReadError(path, str(exc)) from exc
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        EOFError,
        OSError,
        NotImplementedError,
    ) as exc:
        raise ImageReadError(path, f"corrupt zip file ({exc})") from exc


def _header(file: Path) -> Any:
    force = file.suffix.lower() in (".dcm", ".dicom")
    return parse_dataset(file.name, file, force=force, strict=False, headers_only=True)


def _info(uid: str, members: list[tuple[Path | None, Any]], source: Path) -> SeriesInfo:
    first = members[0][1]
    return SeriesInfo(
        uid=uid,
        modality=str(first.get("Modality", "")),
        description=str(first.get("SeriesDescription", "")).strip(),
        number=str(first.get("SeriesNumber", "") or ""),
        source=source,
        files=tuple(file for file, _ in members if file is not None),
        images=len(members),
    )


def _common_folder(files: Sequence[Path], source: Path) -> str:
    """The folder holding ``files``, relative to ``source`` ("." when it is ``source``)."""
    parents = {file.parent for file in files}
    common = Path(*_common_parts([p.parts for p in parents]))
    try:
        return str(common.relative_to(source))
    except ValueError:
        return str(common)


def _common_parts(parts: list[tuple[str, ...]]) -> tuple[str, ...]:
    shared: list[str] = []
    for level in zip(*parts, strict=False):
        if len(set(level)) != 1:
            break
        shared.append(level[0])
    return tuple(shared)
