"""Local files of the client: uploads streamed from disk and results written atomically."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import IO, Any

from carina.errors import FileError

#: A multipart file part as httpx takes it: (field, (file name, content, content type)).
FilePart = tuple[str, tuple[str, Any, str]]

_OCTET = "application/octet-stream"


class DiskFile:
    """A file that httpx reads while it sends it, 64 KiB at a time: never whole in memory.

    It is opened at its first read and closed at its end, so a DICOM series of thousands of files
    never holds thousands of descriptors. Its size comes from ``stat`` (for Content-Length).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size
        self._position = 0
        self._file: IO[bytes] | None = None

    def tell(self) -> int:
        """The read position."""
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Move the read position (as :meth:`io.IOBase.seek`)."""
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self.size}[whence]
        self._position = max(base + offset, 0)
        if self._file is not None:
            self._file.seek(self._position)
        return self._position

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes from the read position; closes the file at its end."""
        if self._file is None:
            self._file = self.path.open("rb")
            self._file.seek(self._position)
        data = self._file.read(size)
        self._position += len(data)
        if not data or size < 0 or self._position >= self.size:
            self.close()
        return data

    def close(self) -> None:
        """Close the file if it is open (a later read opens it again)."""
        if self._file is not None:
            self._file.close()
            self._file = None


def image_parts(image: Path) -> list[FilePart]:
    """The file parts for an image: one ``image`` part, or ``image0..N`` for a folder (a DICOM
    series: every non-hidden file in it, in name order). Only base names are sent.

    Raises:
        FileError: ``image`` does not exist, or is a folder without files.
    """
    image = Path(image)
    if image.is_dir():
        files = sorted(p for p in image.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise FileError(image, "a folder without files")
        return [(f"image{n}", (f.name, DiskFile(f), _OCTET)) for n, f in enumerate(files)]
    if not image.is_file():
        raise FileError(image, "no such file")
    return [("image", (image.name, DiskFile(image), _OCTET))]


def file_part(field: str, path: Path, content_type: str = _OCTET) -> FilePart:
    """One file part streamed from ``path``, sent under its base name.

    Raises:
        FileError: no such file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileError(path, "no such file")
    return (field, (path.name, DiskFile(path), content_type))


def write_atomically(target: Path, data: bytes) -> None:
    """Write ``data`` to a temporary name beside ``target``, fsync, then rename it onto ``target``.

    A reader never sees a half-written file; on any failure ``target`` is left as it was. Missing
    parent folders are created.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with temporary.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        temporary.replace(target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):
        folder = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
