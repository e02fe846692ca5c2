"""Installing archives into a workspace: from the zoo (package data) or from a URL.

Every install is checked before anything appears under ``W/models/<name>/``: a zoo archive against
the sha256 in the index (which covers its manifest, which covers every file), a downloaded zip
against the sha256 the user gives. The archive is assembled in a temporary folder beside the
target and moved into place in one rename.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlparse

from carina.archive.pack import install_folder, sha256_file, unpack_archive, verify_manifest
from carina.errors import ArchiveError
from carina.settings import DEFAULT_MAX_IMAGE_BYTES
from carina.zoo.index import load_index, zoo_archive_path, zoo_entry

#: Called with (bytes done, bytes in total or None).
Progress = Callable[[int, int | None], None]

_CHUNK = 1 << 16
_ATTEMPTS = 5


def verify_zoo(names: list[str] | None = None) -> dict[str, list[str]]:
    """Check shipped archives against the index: ``{name: problems}`` (empty lists when intact)."""
    entries = load_index()
    report = {}
    for name in names or sorted(entries):
        entry = zoo_entry(name)
        root = zoo_archive_path(name)
        manifest = root / "manifest.json"
        if not manifest.is_file():
            report[name] = ["manifest.json: missing"]
            continue
        problems = (
            []
            if sha256_file(manifest) == entry.sha256
            else ["manifest.json: sha256 differs from the index"]
        )
        report[name] = problems + verify_manifest(root)
    return report


def install_archive(name: str, workspace: str | Path) -> Path:
    """Copy the zoo archive ``name`` to ``workspace/models/name/`` after checking it.

    Raises:
        ArchiveError: unknown name, or the shipped files differ from the index.
    """
    problems = verify_zoo([name])[name]
    if problems:
        raise ArchiveError(f"{name}: the shipped archive is damaged: {'; '.join(problems[:3])}")
    return install_folder(zoo_archive_path(name), Path(workspace) / "models", name, copy=True)


def install_from_url(
    url: str,
    workspace: str | Path,
    *,
    sha256: str,
    name: str | None = None,
    progress: Progress | None = None,
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
) -> Path:
    """Download an archive zip (``https://``, ``http://`` or ``file://``), check, unpack, install.

    Downloads resume where they stopped (HTTP Range), both after a dropped connection (retried
    here) and across runs (the partial file is kept under ``W/.downloads/``).

    Raises:
        ArchiveError: a bad URL, a failed download, a sha256 mismatch (the download is deleted
            and nothing is installed), or an unsafe or invalid zip.
    """
    workspace = Path(workspace)
    parsed = urlparse(url)
    wanted = sha256.lower().strip()
    if len(wanted) != 64 or any(c not in "0123456789abcdef" for c in wanted):
        raise ArchiveError("--sha256 must be 64 hexadecimal digits")
    archive_name = name or Path(unquote(parsed.path)).name.removesuffix(".zip")
    downloads = workspace / ".downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    if parsed.scheme == "file":
        zip_path = Path(unquote(parsed.path))
        if not zip_path.is_file():
            raise ArchiveError(f"{zip_path.name}: no such file")
    elif parsed.scheme in ("http", "https"):
        zip_path = downloads / f"{wanted}.zip"
        if not zip_path.is_file():
            _download(url, zip_path, progress=progress)
    else:
        raise ArchiveError(
            f"unsupported URL scheme {parsed.scheme!r}; use https://, http:// or file://"
        )
    actual = sha256_file(zip_path)
    if actual != wanted:
        if parsed.scheme != "file":
            zip_path.unlink(missing_ok=True)
        raise ArchiveError(
            f"{archive_name}: sha256 {actual} differs from the expected {wanted}; nothing installed"
        )
    scratch = Path(tempfile.mkdtemp(prefix=".unpack-", dir=downloads))
    try:
        unpacked = unpack_archive(zip_path, scratch / archive_name, max_bytes=max_bytes)
        target = install_folder(unpacked, workspace / "models", archive_name, copy=False)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if parsed.scheme != "file":
        zip_path.unlink(missing_ok=True)
    return target


def _download(url: str, target: Path, *, progress: Progress | None) -> None:
    import httpx

    partial = target.with_suffix(".part")
    last_error: Exception | None = None
    for attempt in range(_ATTEMPTS):
        done = partial.stat().st_size if partial.is_file() else 0
        headers = {"Range": f"bytes={done}-"} if done else {}
        try:
            with httpx.stream(
                "GET", url, headers=headers, follow_redirects=True, timeout=60
            ) as reply:
                if reply.status_code == 416:  # everything is already here
                    break
                if reply.status_code not in (200, 206):
                    raise ArchiveError(
                        f"download failed: HTTP {reply.status_code} from {_host(url)}"
                    )
                if reply.status_code == 200:
                    done = 0  # the server ignored the range: start again
                total = _total(reply.headers, done)
                with partial.open("ab" if done else "wb") as out:
                    for chunk in reply.iter_bytes(_CHUNK):
                        out.write(chunk)
                        done += len(chunk)
                        if progress:
                            progress(done, total)
                if total is not None and done < total:
                    raise httpx.ReadError("connection closed early")
            break
        except (httpx.TransportError, httpx.StreamError) as exc:
            last_error = exc
            time.sleep(min(2.0, 0.2 * (attempt + 1)))
    else:
        raise ArchiveError(
            f"download from {_host(url)} failed after {_ATTEMPTS} attempts ({last_error})"
        )
    partial.replace(target)


def _total(headers: object, done: int) -> int | None:
    get = getattr(headers, "get", None)
    if get is None:
        return None
    content_range = get("content-range")
    if content_range and "/" in content_range:
        size = content_range.rsplit("/", 1)[1]
        return int(size) if size.isdigit() else None
    length = get("content-length")
    return done + int(length) if length and length.isdigit() else None


def _host(url: str) -> str:
    return urlparse(url).netloc or url
