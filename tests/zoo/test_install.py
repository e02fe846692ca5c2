"""Installing archives: from the zoo, and by URL from a server on 127.0.0.1 (resume, checksum)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from carina.archive import pack_archive
from carina.archive.pack import sha256_file, verify_manifest
from carina.errors import ArchiveError
from carina.zoo import install_archive, install_from_url, load_index, verify_zoo
from tests.archive.conftest import copy_example
from tests.zoo.conftest import ZOO

SERVER = Path(__file__).with_name("range_server.py")


def serve(root: Path, drop_after: int | None = None) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, str(SERVER), str(root)]
    if drop_after is not None:
        command += ["--drop-after", str(drop_after)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    port = int(process.stdout.readline())
    return process, f"http://127.0.0.1:{port}"


def stop(process: subprocess.Popen[str]) -> None:
    process.kill()
    process.wait()
    if process.stdout is not None:
        process.stdout.close()


@pytest.fixture
def published(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A packed example archive with a big enough model file, and its sha256."""
    root = copy_example("spine_ct_vertebrae", tmp_path / "spine")
    (root / "models").mkdir()
    (root / "models" / "model.pt").write_bytes(bytes(range(256)) * 4000)
    zip_path = pack_archive(root, tmp_path / "www" / "spine_ct_vertebrae.zip")
    yield zip_path, sha256_file(zip_path)


def test_every_zoo_archive_matches_the_index_and_installs(tmp_path: Path) -> None:
    index = load_index()
    assert set(index) == set(ZOO)
    report = verify_zoo()
    assert all(problems == [] for problems in report.values()), report
    for name, entry in index.items():
        assert entry.size < 10_000_000 and "mean_dice" in entry.metrics
        target = install_archive(name, tmp_path / "workspace")
        assert target == tmp_path / "workspace" / "models" / name
        assert verify_manifest(target) == []
        assert (target / "docs" / "README.md").read_text().count("not for diagnosis") == 1


def test_install_from_http_resumes_a_dropped_download(
    tmp_path: Path, published: tuple[Path, str]
) -> None:
    zip_path, digest = published
    process, base = serve(zip_path.parent, drop_after=zip_path.stat().st_size // 3)
    seen: list[tuple[int, int | None]] = []
    try:
        target = install_from_url(
            f"{base}/{zip_path.name}",
            tmp_path / "ws",
            sha256=digest,
            progress=lambda d, t: seen.append((d, t)),
        )
    finally:
        stop(process)
    assert target.name == "spine_ct_vertebrae" and verify_manifest(target) == []
    assert seen[-1] == (zip_path.stat().st_size, zip_path.stat().st_size)
    assert not list((tmp_path / "ws" / ".downloads").glob("*.part"))


def test_wrong_checksum_installs_nothing(tmp_path: Path, published: tuple[Path, str]) -> None:
    zip_path, _ = published
    process, base = serve(zip_path.parent)
    try:
        with pytest.raises(ArchiveError, match="differs from the expected"):
            install_from_url(f"{base}/{zip_path.name}", tmp_path / "ws", sha256="0" * 64)
    finally:
        stop(process)
    assert not (tmp_path / "ws" / "models").exists() or not any(
        (tmp_path / "ws" / "models").iterdir()
    )
    assert not any((tmp_path / "ws" / ".downloads").glob("*.zip"))


def test_file_urls_and_bad_arguments(tmp_path: Path, published: tuple[Path, str]) -> None:
    zip_path, digest = published
    target = install_from_url(zip_path.as_uri(), tmp_path / "ws", sha256=digest, name="mine")
    assert target.name == "mine" and zip_path.is_file()
    with pytest.raises(ArchiveError, match="64 hexadecimal digits"):
        install_from_url(zip_path.as_uri(), tmp_path / "ws", sha256="abc")
    with pytest.raises(ArchiveError, match="unsupported URL scheme"):
        install_from_url("ftp://example.org/x.zip", tmp_path / "ws", sha256="0" * 64)
    with pytest.raises(ArchiveError, match="not in the zoo"):
        install_archive("liver_ct", tmp_path / "ws")
