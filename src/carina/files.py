"""File helpers: atomic writes, and reading zip files that may be hostile.

Atomic writes go to a temporary name beside the target, are fsynced, then renamed, so a reader (or
another replica on a shared workspace) sees the old file or the new one, never half of one. Zip
reading refuses path traversal, links and decompression bombs before a byte is written.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import stat
import tempfile
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from carina.errors import UnsafeZipError

_CHUNK = 1 << 20
#: ``@host@pid@`` in the name of a folder a process works in (see :func:`owned_folder`).
_OWNER = re.compile(r"@(?P<host>[A-Za-z0-9._-]+)@(?P<pid>[0-9]+)@")


@contextlib.contextmanager
def atomic_path(target: str | Path, *, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target`` atomically.

    Whatever the body writes to the yielded path is fsynced and renamed onto ``target`` only when
    the body returns; on any exception the temporary file is removed and ``target`` is untouched.

    Args:
        target: the final path.
        suffix: extension for the temporary name, for writers that choose a format by suffix.
    """
    target = Path(target)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp{suffix}")
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):
        _fsync_dir(target.parent)


def atomic_write_bytes(target: str | Path, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically (see :func:`atomic_path`)."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def owner_tag(pid: int | None = None) -> str:
    """``@host@pid@``: put in the name of a work folder, it says which process owns it (this
    one, or the process ``pid`` of this host)."""
    host = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "host"
    return f"@{host}@{os.getpid() if pid is None else pid}@"


def owned_folder(parent: str | Path, prefix: str) -> Path:
    """A new private folder (mode 0700) under ``parent`` named ``prefix`` + :func:`owner_tag`.

    :func:`sweep_stale` removes it once its process is gone, so a process killed while it works
    (``kill -9``, a power cut) leaves nothing behind for long.
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{owner_tag()}", dir=parent))


def is_stale(path: Path, *, max_age: float, owner: str | None = None) -> bool:
    """Whether a work folder's owner is gone: a process of this host that no longer runs, or
    (another host's, or untagged) nothing changed in it for ``max_age`` seconds. The owner is
    read from the name, or given as ``owner`` (``@host@pid@``)."""
    match = _OWNER.search(owner if owner is not None else path.name)
    if match and match["host"] == owner_tag().split("@")[1]:
        pid = int(match["pid"])
        if pid == os.getpid():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # alive, another user's
    try:
        age = time.time() - path.lstat().st_mtime
    except OSError:
        return False
    return age > max_age


def sweep_stale(folder: str | Path, patterns: tuple[str, ...], *, max_age: float) -> list[Path]:
    """Remove the entries of ``folder`` matching any glob of ``patterns`` whose owner is gone
    (:func:`is_stale`); returns what was removed."""
    removed = []
    for pattern in patterns:
        for path in Path(folder).glob(pattern):
            if is_stale(path, max_age=max_age):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed.append(path)
    return removed


@contextlib.contextmanager
def exclusive_lock(path: str | Path, *, max_age: float) -> Iterator[Path]:
    """Hold the lock file ``path`` for the block: created exclusively, holding its owner's
    ``@host@pid@``, removed at the end. A lock whose owner is gone (a process of this host that
    no longer runs, or a file not touched for ``max_age`` seconds: holders touch it while they
    work, see :func:`touch`) is taken over, so a killed holder never blocks the next one.

    Raises:
        FileExistsError: a live owner holds it (the message names the owner).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = owner_tag()
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = lock_holder(path)
            if not is_stale(path, max_age=max_age, owner=holder):
                shown = holder.strip("@").replace("@", " pid ")
                raise FileExistsError(f"held by {shown}") from None
            path.unlink(missing_ok=True)  # the holder is gone: take it over
            continue
        with os.fdopen(fd, "w") as out:
            out.write(tag)
        break
    else:
        raise FileExistsError(f"{path.name}: taken meanwhile by another process")
    try:
        yield path
    finally:
        if lock_holder(path) == tag:
            path.unlink(missing_ok=True)


def touch(path: str | Path) -> None:
    """Mark a held lock (or any work file) as alive now."""
    with contextlib.suppress(OSError):
        os.utime(path)


def lock_holder(path: Path) -> str:
    """The ``@host@pid@`` of a lock file's holder (``@unknown@0@`` when unreadable)."""
    try:
        text = path.read_text()[:300]
    except OSError:
        return "@unknown@0@"
    match = _OWNER.search(text)
    return match.group(0) if match else "@unknown@0@"


def checked_members(archive: zipfile.ZipFile, *, max_bytes: int) -> list[zipfile.ZipInfo]:
    """The file entries of ``archive`` after checking every entry is safe to unpack.

    Refuses absolute names, ``..`` components, drive letters, symbolic links, and a declared
    uncompressed total over ``max_bytes``. Directory entries and macOS ``__MACOSX/`` resource
    forks are left out of the result.

    Raises:
        UnsafeZipError: naming the first offending entry.
    """
    members: list[zipfile.ZipInfo] = []
    total = 0
    for info in archive.infolist():
        name = info.filename
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
            raise UnsafeZipError(f"entry {name!r} would be written outside the target folder")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UnsafeZipError(f"entry {name!r} is a symbolic link")
        if info.is_dir() or (parts and parts[0] == "__MACOSX"):
            continue
        total += info.file_size
        if total > max_bytes:
            raise UnsafeZipError(
                f"unzipped size exceeds the limit of {max_bytes} bytes (at entry {name!r})"
            )
        members.append(info)
    return members


def iter_member_bytes(
    archive: zipfile.ZipFile, members: list[zipfile.ZipInfo], *, max_bytes: int
) -> Iterator[tuple[zipfile.ZipInfo, bytes]]:
    """Yield ``(entry, contents)``, counting the bytes actually inflated against ``max_bytes``.

    The declared sizes checked by :func:`checked_members` can lie; this stops as soon as the real
    output passes the limit.
    """
    total = 0
    for info in members:
        chunks = []
        with archive.open(info) as stream:
            while chunk := stream.read(_CHUNK):
                total += len(chunk)
                if total > max_bytes:
                    raise UnsafeZipError(
                        f"unzipped size exceeds the limit of {max_bytes} bytes "
                        f"(at entry {info.filename!r})"
                    )
                chunks.append(chunk)
        yield info, b"".join(chunks)


def extract_members(
    archive: zipfile.ZipFile, members: list[zipfile.ZipInfo], target: Path, *, max_bytes: int
) -> list[Path]:
    """Write checked ``members`` under the existing folder ``target``; returns the paths written.

    The caller owns ``target`` (typically a fresh temporary folder) and removes it on failure.
    """
    root = target.resolve()
    written: list[Path] = []
    for info, data in iter_member_bytes(archive, members, max_bytes=max_bytes):
        path = (root / info.filename.replace("\\", "/")).resolve()
        if not path.is_relative_to(root):
            raise UnsafeZipError(
                f"entry {info.filename!r} would be written outside the target folder"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written.append(path)
    return written
