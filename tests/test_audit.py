"""The audit log: a round trip, filters, two processes appending at once, the hash chain finding
edited, deleted and truncated lines, rotation, refusing long values, file modes, and
``carina audit`` as a user runs it."""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

import carina.audit
from carina.audit import GENESIS, AuditLog, opaque, read_events, verify_log
from carina.cli.main import app

runner = CliRunner()


def host_files(workspace: Path) -> list[Path]:
    """This host's files in their order."""
    folder = workspace / "audit"
    host = AuditLog(workspace).host
    rotated = sorted(folder.glob(f"{host}.*.jsonl"), key=lambda p: int(p.name.split(".")[-2]))
    return [folder / f"{host}.jsonl", *rotated]


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def digest(line: bytes) -> str:
    return hashlib.sha256(line.removesuffix(b"\n")).hexdigest()


def five_events(workspace: Path) -> Path:
    """Five recorded events; the file they are in."""
    log = AuditLog(workspace)
    for n in range(5):
        log.record(actor=f"user{n}", action="read", target=f"image:{opaque(str(n))}", status=200)
    return host_files(workspace)[0]


def test_record_and_read_back(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    recorded = log.record(
        actor="ann",
        action="save_label",
        target=f"label:{opaque('case 1')}/final",
        status=200,
        request_id="r-1",
        detail={"tag": "final", "version": "20260101T000000-abc"},
    )
    denied = log.record(actor="anonymous", action="delete_model", outcome="denied", status=403)
    assert read_events(tmp_path) == [recorded, denied]
    assert recorded.at.tzinfo == UTC and recorded.replica.endswith(f"@{os.getpid()}")
    first = json.loads(lines_of(host_files(tmp_path)[0])[0])
    assert first["prev"] == GENESIS and first["detail"]["tag"] == "final"
    assert verify_log(tmp_path) == []
    assert read_events(tmp_path / "nothing here") == [] and verify_log(tmp_path / "none") == []


def test_filters(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    events = [
        log.record(actor="ann", action="read", target="image:a"),
        log.record(actor="bob", action="read", target="image:b"),
        log.record(actor="ann", action="approve", target="image:b"),
    ]
    assert read_events(tmp_path, actor="ann") == [events[0], events[2]]
    assert read_events(tmp_path, action="read", target="image:b") == [events[1]]
    assert read_events(tmp_path, since=events[1].at) == events[1:]
    assert read_events(tmp_path, until=events[1].at) == events[:1]
    assert read_events(tmp_path, actor="nobody") == []


def append_lines(workspace: Path, count: int, start: Any) -> None:
    log = AuditLog(workspace)
    start.wait()
    for n in range(count):
        log.record(actor="worker", action="infer", detail={"n": n})


def test_two_processes_append_whole_lines_on_one_chain(tmp_path: Path) -> None:
    spawn = multiprocessing.get_context("spawn")
    start = spawn.Barrier(2)
    workers = [spawn.Process(target=append_lines, args=(tmp_path, 200, start)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    lines = lines_of(host_files(tmp_path)[0])
    assert len(lines) == 400 and all(line.endswith(b"\n") for line in lines)
    events = read_events(tmp_path)
    assert len(events) == 400 and len({e.replica for e in events}) == 2
    writers = [json.loads(line)["replica"] for line in lines]
    assert sum(a != b for a, b in itertools.pairwise(writers)) > 1  # they did write at once
    assert verify_log(tmp_path) == []


def test_verify_finds_an_edited_line(tmp_path: Path) -> None:
    path = five_events(tmp_path)
    lines = lines_of(path)
    lines[2] = lines[2].replace(b'"user2"', b'"user9"')
    path.write_bytes(b"".join(lines))
    [problem] = verify_log(tmp_path)
    assert problem.startswith(f"{path.name} line 4: does not follow")


def test_verify_finds_a_deleted_line(tmp_path: Path) -> None:
    path = five_events(tmp_path)
    lines = lines_of(path)
    path.write_bytes(b"".join(lines[:2] + lines[3:]))
    assert [p.split(":")[0] for p in verify_log(tmp_path)] == [f"{path.name} line 3"]


def test_verify_finds_a_truncated_line_and_the_log_goes_on(tmp_path: Path) -> None:
    path = five_events(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])
    assert verify_log(tmp_path) == [f"{path.name} line 5: truncated (no newline at the end)"]
    AuditLog(tmp_path).record(actor="ann", action="read")  # after a crash mid-line
    assert verify_log(tmp_path) == [f"{path.name} line 5: not an audit event"]
    assert [e.actor for e in read_events(tmp_path)][-2:] == ["user3", "ann"]


def test_a_long_foreign_last_line_is_chained(tmp_path: Path) -> None:
    path = five_events(tmp_path)
    garbage = b"x" * 10_000 + b"\n"  # longer than one read back from the end
    with path.open("ab") as stream:
        stream.write(garbage)
    AuditLog(tmp_path).record(actor="ann", action="read")
    assert json.loads(lines_of(path)[-1])["prev"] == digest(garbage)
    assert verify_log(tmp_path) == [f"{path.name} line 6: not an audit event"]


def test_rotation_continues_the_chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(carina.audit, "ROTATE_BYTES", 1000)
    log = AuditLog(tmp_path)
    recorded = [log.record(actor="ann", action="read", detail={"n": n}) for n in range(12)]
    files = host_files(tmp_path)
    assert len(files) >= 3 and all(path.is_file() for path in files)
    assert all(path.stat().st_size < 1000 + 4096 for path in files)
    first_of_second = json.loads(lines_of(files[1])[0])
    assert first_of_second["prev"] == digest(lines_of(files[0])[-1])
    assert read_events(tmp_path) == recorded and verify_log(tmp_path) == []
    files[1].unlink()
    problems = verify_log(tmp_path)
    assert problems[0] == f"{files[1].name}: missing"
    assert problems[1].startswith(f"{files[2].name} line 1: does not follow")


def test_long_values_are_refused(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    with pytest.raises(ValueError, match="no patient data"):
        log.record(actor="ann", action="read", target="image:" + "x" * 200)
    with pytest.raises(ValueError, match="no patient data"):
        log.record(actor="ann", action="read", detail={"name": "y" * 201})
    with pytest.raises(ValueError, match="over 4096 bytes"):
        log.record(actor="ann", action="read", detail={str(n): "z" * 150 for n in range(40)})
    with pytest.raises(ValueError):
        log.record(actor="ann", action="read", outcome="maybe")
    assert read_events(tmp_path) == []
    assert opaque("Jane Doe") == hashlib.sha256(b"Jane Doe").hexdigest()[:32]


def test_folder_and_files_are_private(tmp_path: Path) -> None:
    path = five_events(tmp_path / "workspace")
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def cli(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, ["audit", *args])
    assert result.exit_code == code, result.output
    return result.output


class TwoHoursAgo(datetime):
    @classmethod
    def now(cls, tz: object = None) -> TwoHoursAgo:  # type: ignore[override]
        return super().now(UTC) - timedelta(hours=2)  # type: ignore[return-value]


def test_the_audit_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from carina.datastore import open_datastore

    workspace = tmp_path / "workspace"
    image = tmp_path / "scan.nii.gz"
    volume = np.random.default_rng(3).random((16, 16, 16)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), image)
    store = open_datastore(workspace, max_bytes=2**30)
    store.add_image(image, image_id="Jane Doe")
    log = AuditLog(workspace)
    with monkeypatch.context() as past:
        past.setattr(carina.audit, "datetime", TwoHoursAgo)
        log.record(actor="ann", action="upload_image", target=f"image:{opaque('Jane Doe')}")
    log.record(actor="bob", action="read", target=f"image:{opaque('Jane Doe')}", status=200)
    log.record(actor="bob", action="delete_image", target=f"image:{opaque('gone')}", status=200)
    ws = ["--workspace", str(workspace)]

    rows = cli(*ws).splitlines()
    assert rows[0].split() == ["time", "actor", "action", "target", "outcome", "status"]
    assert "upload_image  image:Jane Doe" in rows[1] and "200" in rows[2]
    assert f"image:{opaque('gone')}" in rows[3]  # no longer in the datastore: the key
    recent = cli(*ws, "--since", "1h", "--json").splitlines()
    assert [json.loads(line)["action"] for line in recent] == ["read", "delete_image"]
    assert "Jane Doe" not in "".join(recent)
    assert len(cli(*ws, "--target", "image:Jane Doe").splitlines()) == 3
    assert len(cli(*ws, "--actor", "bob", "--action", "read").splitlines()) == 2
    assert "'yesterday' is neither" in cli(*ws, "--since", "yesterday", code=2)

    assert "intact" in cli(*ws, "--verify")
    path = host_files(workspace)[0]
    path.write_bytes(path.read_bytes().replace(b'"bob"', b'"eve"', 1))
    assert f"{path.name} line 3: does not follow" in cli(*ws, "--verify", code=1)
