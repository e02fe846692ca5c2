"""A datastore on a PACS: images from DICOMweb, labels on the workspace and in the PACS as SEG.

The PACS is the system of record for images; the workspace keeps what Carina adds to them, the
same way :class:`~carina.datastore.local.LocalDatastore` does (it *is* one, for everything but
the images), so the learning loop, the MONAI Label API and the viewer work on it unchanged::

    WORKSPACE/datastore/images/<key>/info.json      made when Carina first uses a series
    WORKSPACE/datastore/images/<key>/labels/...     label versions, as on a local datastore
    WORKSPACE/cache/dicomweb/<key>/                 a series fetched with WADO-RS (bounded)

An image id is the SeriesInstanceUID (what OHIF sends). QIDO-RS lists the image series (not SEG,
SR or other non-image objects); WADO-RS fetches a series the first time a replica needs it, into
the shared cache (least recently used series go when it is full); a label a person saves (any
tag but ``original``, a model's output) is also stored in the PACS as a DICOM SEG with STOW-RS
*before* it is kept, so a PACS that is down (502/504) leaves no half-saved label.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from carina.datastore.local import _INFO, LocalDatastore
from carina.datastore.records import ORIGINAL, ImageRecord, ImageStatus
from carina.errors import DatastoreError, ImageNotFound, ImageReadError, NotFoundError
from carina.files import atomic_write_bytes, owned_folder, owner_tag, sweep_stale
from carina.io import Volume
from carina.io.dicom_files import NOT_IMAGES

if TYPE_CHECKING:
    from carina.deid.guard import PhiGuard
    from carina.io.dicomweb import DicomwebClient

#: Seconds a QIDO listing is reused by one process (a page of the MONAI Label datastore view
#: asks for it more than once).
LISTING_SECONDS = 5.0
_PAGE = 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Series:
    """A series the PACS holds: its UIDs, modality and when it was made."""

    study: str
    series: str
    modality: str
    made_at: datetime


class DicomwebDatastore(LocalDatastore):
    """Images in a PACS (DICOMweb), everything else on the workspace.

    Args:
        root: ``WORKSPACE/datastore`` (records and labels).
        client: the PACS.
        cache: ``WORKSPACE/cache/dicomweb`` (fetched series, shared by replicas).
        cache_bytes: the most the cache keeps.
        max_bytes: the largest decoded image accepted.
        guard: the PHI guard a fetched series passes before it enters the cache.
    """

    def __init__(
        self,
        root: Path,
        *,
        client: DicomwebClient,
        cache: Path,
        cache_bytes: int,
        max_bytes: int,
        guard: PhiGuard | None = None,
    ) -> None:
        super().__init__(root, max_bytes=max_bytes)
        self.client = client
        self.guard = guard
        self.cache = cache
        self.cache_bytes = cache_bytes
        self._listing: tuple[float, list[Series]] = (0.0, [])
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The PACS's DICOMweb root."""
        return self.client.url

    def close(self) -> None:
        """Close the connections to the PACS (a later call opens new ones)."""
        self.client.close()

    # -- images ----------------------------------------------------------------------------------

    def images(self) -> list[ImageRecord]:
        """Every image series of the PACS, with what the workspace keeps of it, oldest first."""
        records = []
        for series in self.series():
            folder = self._path(series.series)
            try:
                records.append(
                    self._record(folder) if (folder / _INFO).is_file() else _new_record(series)
                )
            except (OSError, ValueError, KeyError):
                continue  # half written by a killed process
        return sorted(records, key=lambda r: (r.imported_at, r.id))

    def series(self) -> list[Series]:
        """The PACS's image series (QIDO-RS), reused for :data:`LISTING_SECONDS`."""
        with self._lock:
            listed_at, listed = self._listing
            if time.monotonic() - listed_at < LISTING_SECONDS:
                return listed
        found = self._search()
        with self._lock:
            self._listing = (time.monotonic(), found)
        return found

    def image_path(self, image_id: str) -> Path:
        """The series' folder in the cache, fetched with WADO-RS when no replica has yet."""
        study = str(self._info(self._folder(image_id))["dicomweb"]["study"])
        return self._cached(study, image_id)

    def pinned_image_path(self, image_id: str, folder: Path) -> Path:
        """The series hard-linked (copied across file systems) into ``folder``, so that the
        cache may evict it while a training job still reads it."""
        cached = self.image_path(image_id)
        target = folder / "images" / cached.name
        if not target.is_dir():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(cached, target, copy_function=_link_or_copy)
        return target

    def add_image(
        self, source: Path, *, image_id: str | None = None, info: dict[str, Any] | None = None
    ) -> ImageRecord:
        """Store a DICOM series (a file or a folder of one series) in the PACS with STOW-RS; its
        id is its SeriesInstanceUID (``image_id`` is kept as its ``name`` in the info).

        Raises:
            DatastoreError: not DICOM, more than one series, or unreadable.
            UpstreamError, UpstreamTimeoutError: the PACS refused it or did not answer.
        """
        from carina.io.dicom import read_headers

        try:
            headers = read_headers(source, max_bytes=self.max_bytes)
        except ImageReadError as exc:
            raise DatastoreError(
                f"the datastore is a PACS ({self.url}): it takes DICOM series only; {exc}"
            ) from exc
        uids = {str(getattr(ds, "SeriesInstanceUID", "")) for ds in headers}
        if not headers:
            raise DatastoreError(
                f"the datastore is a PACS ({self.url}): it takes DICOM series only, and "
                f"{source.name!r} holds no DICOM image"
            )
        if len(uids) != 1:
            raise DatastoreError(
                f"the datastore is a PACS: upload one DICOM series at a time ({len(uids)} found)"
            )
        files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
        self.client.store(files)
        with self._lock:
            self._listing = (0.0, [])
        series_uid = uids.pop()
        extra = {**(info or {}), **({"name": image_id} if image_id != series_uid else {})}
        record = self.image(series_uid)
        return self.update_info(series_uid, extra) if extra else record

    def delete_image(self, image_id: str) -> ImageRecord:
        """Refused: the PACS keeps its images (delete them there)."""
        raise DatastoreError(
            f"image {image_id[:64]!r} is in the PACS ({self.url}), which keeps its images: "
            "delete it there; Carina deletes only its labels (DELETE /datastore/label)"
        )

    # -- labels ----------------------------------------------------------------------------------

    def _before_keeping(self, image_id: str, labels: Volume, tag: str) -> dict[str, Any]:
        """A person's label (any tag but ``original``) is first stored in the PACS as a DICOM
        SEG of its series (recorded in the version's info as ``dicom_seg``), so nothing is kept
        that the PACS did not take.

        Raises:
            UpstreamError, UpstreamTimeoutError: the PACS refused the SEG or did not answer.
        """
        if tag == ORIGINAL or not np.asarray(labels.array).any():
            return {}
        return {"dicom_seg": self._store_seg(image_id, labels)}

    def sweep(self, *, max_age: float = 3600.0) -> int:
        """What killed processes left: the datastore's, and half-fetched series."""
        removed = super().sweep(max_age=max_age)
        if self.cache.is_dir():
            removed += len(sweep_stale(self.cache, (".*",), max_age=max_age))
        return removed

    # -- inside ----------------------------------------------------------------------------------

    def _folder(self, image_id: str) -> Path:
        """The image's record folder, made the first time Carina uses a series of the PACS.

        Raises:
            ImageNotFound: the PACS has no image series of that id.
        """
        folder = self._path(image_id)
        if (folder / _INFO).is_file():
            return folder
        series = self._find(image_id)
        staging = owned_folder(folder.parent, f".{folder.name}.new")
        try:
            document = {
                "id": series.series,
                "name": f"{series.series}.zip",
                "file": "series",
                "imported_at": series.made_at.isoformat(timespec="microseconds"),
                "info": {},
                "dicomweb": {"study": series.study, "modality": series.modality},
            }
            atomic_write_bytes(staging / _INFO, json.dumps(document, indent=2).encode())
            staging.rename(folder)
        except OSError:
            if not (folder / _INFO).is_file():  # not made meanwhile by another replica
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return folder

    def _find(self, image_id: str) -> Series:
        for series in self.series():
            if series.series == image_id:
                return series
        found = [
            s for s in map(_series, self.client.search_series(SeriesInstanceUID=image_id)) if s
        ]
        if not found or found[0].series != image_id:
            raise ImageNotFound(f"image {image_id[:64]!r} is not an image series of {self.url}")
        return found[0]

    def _search(self) -> list[Series]:
        """Every image series of the PACS, page by page."""
        found: dict[str, Series] = {}
        for page in range(100):
            answer = self.client.search_series(
                limit=str(_PAGE),
                offset=str(page * _PAGE),
                includefield="SeriesDate,SeriesTime,StudyDate,StudyTime",
            )
            fresh = [s for s in map(_series, answer) if s and s.series not in found]
            found.update((s.series, s) for s in fresh)
            if len(answer) < _PAGE or not fresh:  # the last page, or a server that ignores offset
                break
        return [s for s in found.values() if s.modality not in NOT_IMAGES]

    def _cached(self, study: str, series: str) -> Path:
        """The series in the cache: fetched once, then shared; its use keeps it there longer."""
        target = self.cache / self._path(series).name
        if target.is_dir():
            os.utime(target)
            return target
        staging = owned_folder(self.cache, f".{target.name}.new")
        try:
            files = self.client.retrieve_series_files(study, series)
            size = sum(len(data) for data in files)
            if not files or size > self.cache_bytes:
                raise DatastoreError(
                    f"series {series[:64]!r} of {self.url}: "
                    + (
                        "the PACS sent no instance"
                        if not files
                        else f"{size >> 20} MiB is more than the cache holds "
                        f"({self.cache_bytes >> 20} MiB; CARINA_DICOMWEB_CACHE_MIB)"
                    )
                )
            for number, data in enumerate(files):
                (staging / f"{number:05d}.dcm").write_bytes(data)
            if self.guard is not None:
                self.guard.check_series(staging)  # refused: never in the cache
            try:
                staging.rename(target)
            except OSError:
                if not target.is_dir():  # not fetched meanwhile by another replica
                    raise
        except NotFoundError as exc:
            raise ImageNotFound(f"image {series[:64]!r} is no longer in {self.url}") from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self._evict(keep=target)
        return target

    def _evict(self, *, keep: Path) -> None:
        """Remove the least recently used series until the cache fits its size."""
        entries = []
        for entry in self.cache.iterdir():
            if entry.is_dir() and not entry.name.startswith("."):
                size = sum(f.stat().st_size for f in entry.iterdir() if f.is_file())
                entries.append((entry.stat().st_mtime, size, entry))
        total = sum(size for _, size, _ in entries)
        for _, size, entry in sorted(entries):
            if total <= self.cache_bytes:
                break
            if entry == keep:
                continue
            retired = entry.with_name(f".{entry.name}.evicted{owner_tag()}{uuid.uuid4().hex}")
            try:
                entry.rename(retired)
            except OSError:
                continue  # evicted meanwhile by another replica
            shutil.rmtree(retired, ignore_errors=True)
            total -= size

    def _store_seg(self, image_id: str, labels: Volume) -> dict[str, str]:
        """Write ``labels`` as a SEG of the image's series and store it in the PACS."""
        import pydicom

        from carina.io.dicom import read_headers
        from carina.io.dicom_seg import write_seg

        source = read_headers(self.image_path(image_id), max_bytes=self.max_bytes)
        names = self.label_names()
        high = int(np.asarray(labels.array).max())
        segments = [names.get(value, f"label {value}") for value in range(1, high + 1)]
        staging = owned_folder(self.cache, ".seg")
        try:
            path = write_seg(labels, source, segments, staging / "seg.dcm")
            self.client.store([path])
            seg = pydicom.dcmread(path, stop_before_pixels=True)
            return {"series": str(seg.SeriesInstanceUID), "instance": str(seg.SOPInstanceUID)}
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _series(dataset: Any) -> Series | None:
    """A QIDO answer's series, or None when it lacks its UIDs."""
    study = str(getattr(dataset, "StudyInstanceUID", "") or "")
    series = str(getattr(dataset, "SeriesInstanceUID", "") or "")
    if not study or not series:
        return None
    date = str(getattr(dataset, "SeriesDate", "") or getattr(dataset, "StudyDate", "") or "")
    clock = str(getattr(dataset, "SeriesTime", "") or getattr(dataset, "StudyTime", "") or "")
    try:
        made_at = datetime.strptime(date + clock.split(".")[0][:6].ljust(6, "0"), "%Y%m%d%H%M%S")
    except ValueError:
        made_at = _EPOCH
    modality = str(getattr(dataset, "Modality", "") or "").upper()
    return Series(study, series, modality, made_at.replace(tzinfo=UTC))


def _new_record(series: Series) -> ImageRecord:
    """The record of a series Carina has not used yet (nothing on the workspace)."""
    return ImageRecord(
        id=series.series,
        name=f"{series.series}.zip",
        imported_at=series.made_at,
        status=ImageStatus.UNLABELLED,
        labels={},
        info={},
    )
