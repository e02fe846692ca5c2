"""Sessions: an image uploaded once under ``W/sessions/<uuid>/``, used by many cheap calls.

Each session folder holds ``info.json`` (times and expiry, written atomically) and the decoded
image. Any replica on the same workspace sees a session the moment it exists; each keeps only a
small cache of decoded volumes in memory, checked against the file's modification time.
A session expires when ``now > last_access_ts + expiry``; expired sessions are deleted on access
and by a periodic sweep, and their images with them.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from carina.errors import RequestError, SessionExpired, SessionNotFound
from carina.files import atomic_write_bytes, owner_tag, sweep_stale
from carina.io import Volume, load_volume, save_volume
from carina.schemas import SessionInfo

log = logging.getLogger(__name__)

_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
#: Formats a client may ask a session image to be stored in (``save_as``).
_STORED = (".nii", ".nii.gz", ".nrrd", ".mha")
_INFO = "info.json"
#: Where a session keeps its DICOM image's headers (for SEG results).
_DICOM = "dicom"


class SessionStore:
    """The sessions of one workspace.

    Args:
        root: the workspace's ``sessions/`` folder.
        default_expiry: seconds when the client asks none (or 0).
        max_expiry: the longest lifetime granted.
        cache_bytes: memory for the decoded volumes this replica keeps (least recently used go
            first; the newest stays whatever its size): later clicks on a session skip reading
            and decoding its file. The workspace keeps the file, so any replica can rebuild it.
    """

    def __init__(
        self, root: Path, *, default_expiry: int, max_expiry: int, cache_bytes: int = 2**30
    ) -> None:
        self.root = root
        self.default_expiry = default_expiry
        self.max_expiry = max_expiry
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[str, tuple[int, Volume]] = OrderedDict()
        self._lock = threading.Lock()

    def create(
        self,
        volume: Volume,
        *,
        expiry: int | None = None,
        save_as: str | None = None,
        dicom: Sequence[Any] = (),
    ) -> SessionInfo:
        """Store ``volume`` as a new session; ``expiry`` 0 or None means the default. ``dicom``:
        the image's DICOM datasets when it came as DICOM, kept as headers only (no pixels) so
        that results can be DICOM SEGs referencing the series.

        Raises:
            RequestError: a negative expiry or an unknown ``save_as`` format.
        """
        if expiry is not None and expiry < 0:
            raise RequestError(f"expiry must be 0 or more seconds, not {expiry}")
        lifetime = min(expiry or self.default_expiry, self.max_expiry)
        suffix = (save_as or ".nii").lower()
        if not suffix.startswith("."):
            suffix = "." + suffix
        if suffix not in _STORED:
            raise RequestError(f"save_as must be one of {', '.join(_STORED)}, not {save_as!r}")
        session_id = str(uuid.uuid4())
        now = int(time.time())
        info = SessionInfo(
            name=session_id,
            image=f"image{suffix}",
            meta={"shape": list(volume.shape), "spacing": [float(s) for s in volume.spacing]},
            create_ts=now,
            last_access_ts=now,
            expiry=lifetime,
        )
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f".{session_id}.new{owner_tag()}"
        staging.mkdir()
        try:
            save_volume(volume, staging / info.image)
            _save_headers(dicom, staging / _DICOM)
            atomic_write_bytes(staging / _INFO, info.model_dump_json().encode())
            staging.rename(self.root / session_id)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        log.info("session created", extra={"session": session_id, "expiry": lifetime})
        return info

    def info(self, session_id: str, *, touch: bool = False) -> SessionInfo:
        """The session's info; ``touch`` refreshes its last access time.

        Raises:
            SessionNotFound: unknown, malformed or expired id (an expired one is deleted).
        """
        folder = self._folder(session_id)
        info = self._read_info(folder, session_id)
        now = int(time.time())
        if now > info.last_access_ts + info.expiry:
            self._remove(session_id)
            raise SessionNotFound(f"session {_shown(session_id)} expired or unknown")
        if touch:
            info = info.model_copy(update={"last_access_ts": now})
            try:
                atomic_write_bytes(folder / _INFO, info.model_dump_json().encode())
            except OSError as exc:  # deleted meanwhile by another replica
                raise SessionNotFound(f"session {_shown(session_id)} expired or unknown") from exc
        return info

    def volume(self, session_id: str) -> Volume:
        """The session's image for an inference call (refreshes its last access).

        Raises:
            SessionExpired: unknown or expired (HTTP 440).
        """
        try:
            info = self.info(session_id, touch=True)
        except SessionNotFound as exc:
            raise SessionExpired(f"Session {_shown(session_id)} expired or unknown") from exc
        path = self.root / session_id / info.image
        try:
            stamp = path.stat().st_mtime_ns
        except OSError as exc:
            raise SessionExpired(f"Session {_shown(session_id)} expired or unknown") from exc
        with self._lock:
            cached = self._cache.get(session_id)
            if cached is not None and cached[0] == stamp:
                self._cache.move_to_end(session_id)
                return cached[1]
        volume = load_volume(path)
        with self._lock:
            self._cache[session_id] = (stamp, volume)
            self._cache.move_to_end(session_id)
            while len(self._cache) > 1 and self._cached_bytes() > self.cache_bytes:
                self._cache.popitem(last=False)
        return volume

    def dicom_headers(self, session_id: str) -> list[Any]:
        """The DICOM headers of a session's image (empty when it did not come as DICOM).

        Raises:
            SessionExpired: unknown or expired (HTTP 440).
        """
        import pydicom

        try:
            self.info(session_id)
        except SessionNotFound as exc:
            raise SessionExpired(f"Session {_shown(session_id)} expired or unknown") from exc
        folder = self.root / session_id / _DICOM
        files = sorted(folder.glob("*.dcm")) if folder.is_dir() else []
        return [pydicom.dcmread(path) for path in files]

    def _cached_bytes(self) -> int:
        return sum(volume.array.nbytes for _, volume in self._cache.values())

    def delete(self, session_id: str) -> SessionInfo:
        """Delete a session and its image; returns its last info.

        Raises:
            SessionNotFound: unknown or malformed id.
        """
        folder = self._folder(session_id)
        info = self._read_info(folder, session_id)
        self._remove(session_id)
        log.info("session deleted", extra={"session": session_id})
        return info

    def purge(self) -> int:
        """Delete every expired session (and leftovers of interrupted creations); how many."""
        removed = 0
        now = int(time.time())
        try:
            folders = list(self.root.iterdir())
        except FileNotFoundError:
            return 0
        sweep_stale(self.root, (".*",), max_age=3600)
        for folder in folders:
            if not _ID.fullmatch(folder.name):
                continue
            try:
                info = self._read_info(folder, folder.name)
            except SessionNotFound:
                continue
            if now > info.last_access_ts + info.expiry:
                self._remove(folder.name)
                removed += 1
        if removed:
            log.info("expired sessions deleted", extra={"count": removed})
        return removed

    def _folder(self, session_id: str) -> Path:
        if not _ID.fullmatch(session_id):
            raise SessionNotFound(f"session {_shown(session_id)} expired or unknown")
        return self.root / session_id

    def _read_info(self, folder: Path, session_id: str) -> SessionInfo:
        try:
            return SessionInfo.model_validate(json.loads((folder / _INFO).read_bytes()))
        except (OSError, ValueError) as exc:
            raise SessionNotFound(f"session {_shown(session_id)} expired or unknown") from exc

    def _remove(self, session_id: str) -> None:
        with self._lock:
            self._cache.pop(session_id, None)
        folder = self.root / session_id
        trash = self.root / f".{session_id}.deleted{owner_tag()}{uuid.uuid4().hex[:8]}"
        try:
            folder.rename(trash)
        except OSError:
            return
        shutil.rmtree(trash, ignore_errors=True)


def _shown(session_id: str) -> str:
    """A session id as echoed in a message: at most 64 characters of what the client sent."""
    return session_id if len(session_id) <= 64 else session_id[:61] + "..."


def _save_headers(datasets: Sequence[Any], folder: Path) -> None:
    """Write each dataset without its pixel data (what a SEG needs of its source)."""
    if not datasets:
        return
    folder.mkdir()
    for number, dataset in enumerate(datasets):
        header = dataset.copy()
        for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
            if keyword in header:
                delattr(header, keyword)
        header.save_as(folder / f"{number:05d}.dcm", enforce_file_format=True)
