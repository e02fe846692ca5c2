"""Packing an archive into a zip with a manifest of sha256 sums, and unpacking one safely."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from carina import __version__
from carina.archive.layout import ArchiveLayout, find_root
from carina.errors import ArchiveError, UnsafeZipError
from carina.files import (
    atomic_path,
    atomic_write_bytes,
    checked_members,
    extract_members,
    is_stale,
    owned_folder,
    owner_tag,
)
from carina.settings import DEFAULT_MAX_IMAGE_BYTES

MANIFEST = "manifest.json"
#: Left out of packs: logs, caches, hidden files, and the resume checkpoint unless asked for.
_SKIPPED_FOLDERS = {"logs", "__pycache__", "automl"}
#: Middle of the name an installed archive is moved aside under while its replacement goes in.
_RETIRED = ".old"


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def archive_files(root: Path, *, with_checkpoint: bool = False) -> list[Path]:
    """The files a pack holds, relative to ``root``, sorted; the manifest itself excluded."""
    files = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if not path.is_file() or path.is_symlink() or relative.as_posix() == MANIFEST:
            continue
        if any(part.startswith(".") or part in _SKIPPED_FOLDERS for part in relative.parts):
            continue
        if relative.as_posix() == "models/checkpoint_last.pt" and not with_checkpoint:
            continue
        files.append(relative)
    return files


def write_manifest(root: Path, *, with_checkpoint: bool = False) -> dict[str, Any]:
    """Write ``manifest.json`` (sha256 of every packed file) atomically and return it."""
    manifest = {
        "files": {
            f.as_posix(): sha256_file(root / f)
            for f in archive_files(root, with_checkpoint=with_checkpoint)
        },
        "carina_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    atomic_write_bytes(root / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


def verify_manifest(root: Path) -> list[str]:
    """What differs from the manifest: missing files and changed sums (empty when all match).

    Raises:
        ArchiveError: there is no manifest or it is unreadable.
    """
    try:
        manifest = json.loads((root / MANIFEST).read_text())
        files = dict(manifest["files"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArchiveError(f"{root.name}: no readable {MANIFEST}") from exc
    problems = []
    for name, expected in sorted(files.items()):
        path = root / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif sha256_file(path) != expected:
            problems.append(f"{name}: sha256 differs from the manifest")
    return problems


def pack_archive(source: str | Path, target: str | Path, *, with_checkpoint: bool = False) -> Path:
    """Zip an archive folder (contents at the zip root) after writing its manifest.

    Raises:
        ArchiveError: ``source`` is not an archive.
    """
    root = find_root(Path(source))
    ArchiveLayout(root).kind()
    write_manifest(root, with_checkpoint=with_checkpoint)
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
        for relative in [*archive_files(root, with_checkpoint=with_checkpoint), Path(MANIFEST)]:
            out.write(root / relative, relative.as_posix())
    return target


def unpack_archive(
    source: str | Path, target: str | Path, *, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES
) -> Path:
    """Unpack a zipped archive into the new folder ``target`` and check its manifest.

    Entries may sit at the zip root or under one wrapping folder. Nothing is left at ``target``
    on failure.

    Raises:
        ArchiveError: ``target`` exists, the zip is corrupt or unsafe (``..`` entries, links, over
            ``max_bytes`` unzipped), it is not an archive, or a file's sha256 differs from the
            manifest.
    """
    source, target = Path(source), Path(target)
    if target.exists():
        raise ArchiveError(f"{target.name}: already exists; choose a new folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        try:
            with zipfile.ZipFile(source) as archive:
                members = checked_members(archive, max_bytes=max_bytes)
                extract_members(archive, members, scratch, max_bytes=max_bytes)
        except UnsafeZipError as exc:
            raise ArchiveError(f"{source.name}: {exc}") from exc
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
            raise ArchiveError(f"{source.name}: not a readable zip file ({exc})") from exc
        root = find_root(scratch)
        try:
            ArchiveLayout(root).kind()
        except ArchiveError as exc:
            raise ArchiveError(f"{source.name}: {str(exc).partition(': ')[2]}") from exc
        if (root / MANIFEST).is_file():
            problems = verify_manifest(root)
            if problems:
                raise ArchiveError(f"{source.name}: {'; '.join(problems[:5])}")
        root.rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def install_folder(source: Path, models: Path, name: str, *, copy: bool) -> Path:
    """Put the archive folder ``source`` at ``models/name``, replacing any previous one at once.

    The new folder is staged beside the target (same file system), then renamed into place; a
    reader sees the old archive or the new one, never a half-copied one. ``copy`` keeps
    ``source``; otherwise it is moved. The work folders carry their owner's host and pid, so a
    process killed between the two renames is repaired by :func:`recover_installs`.
    """
    staging = owned_folder(models, f".{name}.install") / name
    try:
        if copy:
            shutil.copytree(source, staging)
        else:
            shutil.move(str(source), staging)
        target = models / name
        if target.exists():
            retired = models / f".{name}{_RETIRED}{owner_tag()}{time.time_ns()}"
            target.rename(retired)
            staging.rename(target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            staging.rename(target)
    finally:
        shutil.rmtree(staging.parent, ignore_errors=True)
    return target


def recover_installs(models: Path, *, max_age: float) -> list[str]:
    """Undo replacements a killed process left half done: an archive moved aside whose
    replacement never arrived is put back (the previous model serves). Returns their names."""
    restored = []
    for retired in sorted(models.glob(f".*{_RETIRED}@*")):
        name = retired.name[1:].rpartition(_RETIRED)[0]
        target = models / name
        if name and not target.exists() and is_stale(retired, max_age=max_age):
            try:
                retired.rename(target)
            except OSError:
                continue
            restored.append(name)
    return restored
