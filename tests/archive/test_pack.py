"""Packing with a manifest and unpacking safely."""

from __future__ import annotations

import json
import stat
import zipfile
from pathlib import Path

import pytest

from carina.archive import pack_archive, unpack_archive, verify_manifest
from carina.archive.pack import sha256_file
from carina.errors import ArchiveError


def test_pack_then_unpack_round_trip(spine_archive: Path, tmp_path: Path) -> None:
    (spine_archive / "models").mkdir()
    (spine_archive / "models" / "model.pt").write_bytes(b"weights")
    (spine_archive / "models" / "checkpoint_last.pt").write_bytes(b"resume state")
    (spine_archive / "logs").mkdir()
    (spine_archive / "logs" / "events").write_bytes(b"tensorboard")
    packed = pack_archive(spine_archive, tmp_path / "spine.zip")
    with zipfile.ZipFile(packed) as archive:
        names = set(archive.namelist())
    assert "config/config_train.json" in names and "manifest.json" in names
    assert "models/model.pt" in names
    assert "models/checkpoint_last.pt" not in names and "logs/events" not in names
    manifest = json.loads((spine_archive / "manifest.json").read_text())
    assert manifest["files"]["models/model.pt"] == sha256_file(spine_archive / "models/model.pt")
    root = unpack_archive(packed, tmp_path / "unpacked")
    assert verify_manifest(root) == []
    assert (root / "models" / "model.pt").read_bytes() == b"weights"


def test_unpack_accepts_one_wrapping_folder(spine_archive: Path, tmp_path: Path) -> None:
    archive = tmp_path / "wrapped.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for path in spine_archive.rglob("*"):
            if path.is_file():
                out.write(path, f"clara_spine/{path.relative_to(spine_archive).as_posix()}")
    root = unpack_archive(archive, tmp_path / "model")
    assert (root / "config" / "config_train.json").is_file()


def test_tampered_file_is_refused(spine_archive: Path, tmp_path: Path) -> None:
    packed = pack_archive(spine_archive, tmp_path / "spine.zip")
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(packed) as source, zipfile.ZipFile(tampered, "w") as out:
        for info in source.infolist():
            data = source.read(info)
            out.writestr(info, data + b" " if info.filename.endswith("aiaa.json") else data)
    with pytest.raises(ArchiveError, match=r"config_aiaa\.json: sha256 differs"):
        unpack_archive(tampered, tmp_path / "model")
    assert not (tmp_path / "model").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("entry", ["../evil.json", "/etc/evil.json", "config/../../evil.json"])
def test_path_traversal_is_refused(tmp_path: Path, entry: str) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("config/config_aiaa.json", "{}")
        out.writestr(entry, "{}")
    with pytest.raises(ArchiveError, match=r"evil.zip: entry .* outside the target folder"):
        unpack_archive(archive, tmp_path / "model")
    assert not (tmp_path / "model").exists() and not (tmp_path.parent / "evil.json").exists()


def test_links_and_oversized_zips_are_refused(tmp_path: Path) -> None:
    linked = tmp_path / "link.zip"
    with zipfile.ZipFile(linked, "w") as out:
        info = zipfile.ZipInfo("config/config_aiaa.json")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        out.writestr(info, "/etc/passwd")
    with pytest.raises(ArchiveError, match="symbolic link"):
        unpack_archive(linked, tmp_path / "a")
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as out:
        out.writestr("config/config_aiaa.json", "{}")
        out.writestr("models/model.pt", bytes(5_000_000))
    with pytest.raises(ArchiveError, match="exceeds the limit"):
        unpack_archive(bomb, tmp_path / "b", max_bytes=1_000_000)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_unpack_refuses_an_existing_folder_and_a_non_archive(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain, "w") as out:
        out.writestr("notes.txt", "no configs here")
    with pytest.raises(ArchiveError, match="already exists"):
        unpack_archive(plain, tmp_path / "taken")
    with pytest.raises(ArchiveError, match="not a model archive"):
        unpack_archive(plain, tmp_path / "new")
    (tmp_path / "garbage.zip").write_bytes(b"not a zip")
    with pytest.raises(ArchiveError, match="not a readable zip"):
        unpack_archive(tmp_path / "garbage.zip", tmp_path / "other")
