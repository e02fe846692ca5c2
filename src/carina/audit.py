"""The append-only audit log: who did what to which image, label or model, and how it ended.

Layout: one file per host under ``WORKSPACE/audit/`` (folder mode 0700, files 0600)::

    audit/<host>.jsonl        the first file of the host ``<host>``
    audit/<host>.<n>.jsonl    the next ones (n = 1, 2, ...), each started once the one before
                              passed ``ROTATE_BYTES`` (64 MiB)

Several replicas share the workspace on EFS or NFS, where ``O_APPEND`` from different machines is
not atomic, so each host appends only to its own file. The processes of one host append with
``O_APPEND``, one ``os.write`` per line (a line is at most ``MAX_LINE_BYTES``, 4 KiB) under an
``fcntl.flock`` of the file, so two of them never interleave, and fsync after each line, so a
recorded event survives a crash. A file is never rewritten or truncated.

Tamper evidence: each line is a JSON object with the fields of :class:`AuditEvent` and ``prev``,
the sha256 (hex) of the line before it in the same file, without its newline; the first line of
a host's first file has 64 zeros, the first line of a later file the hash of the last line of the
file before. :func:`verify_log` recomputes the chains and reports each line that does not follow
the one before (a line edited, deleted or reordered), unparseable and truncated lines, and
missing files. The lines at the end of a chain can be removed without a trace: ship the lines to
a SIEM as they are written, which anchors them.

No patient data: callers pass opaque keys, never image ids (an id may be a patient's name): an
image is ``image:<key>`` with ``key = opaque(image_id)``, the digest the datastore names its
folders by. ``target``, ``actor``, ``action`` and each ``detail`` value are refused (ValueError)
above ``MAX_VALUE_CHARS`` (200) characters.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from carina.files import owner_tag

#: A file is continued in a new one once it is this large.
ROTATE_BYTES = 64 * 2**20
#: The longest line (the JSON object and its newline) written.
MAX_LINE_BYTES = 4096
#: The longest ``actor``, ``action``, ``target`` or ``detail`` value accepted.
MAX_VALUE_CHARS = 200
#: The ``prev`` of the first line of a chain.
GENESIS = "0" * 64
_FOLDER = "audit"
#: ``<host>.jsonl`` or ``<host>.<n>.jsonl`` (host names never end in ``.<digits>``, see _host).
_FILE = re.compile(r"^(?P<host>[^.].*?)(?:\.(?P<n>[1-9][0-9]*))?\.jsonl$")
_TAIL_CHUNK = 4096


class Outcome(StrEnum):
    """How a recorded action ended."""

    OK = "ok"
    DENIED = "denied"
    FAILED = "failed"


@dataclass(frozen=True)
class AuditEvent:
    """One line of the audit log.

    Attributes:
        at: when (aware UTC, microseconds).
        actor: a user name, ``anonymous`` or ``admin-token``.
        action: ``read``, ``infer``, ``save_label``, ``approve``, ``train``, ``sign_in``, ...
        target: ``image:<key>``, ``label:<key>/final``, ``model:<name>``, or None.
        outcome: ``ok``, ``denied`` or ``failed`` (:class:`Outcome`).
        status: the HTTP status, when recorded by the server.
        request_id: the request's id, when recorded by the server.
        replica: ``host@pid`` of the process that wrote it.
        detail: a few small values, no patient data.
    """

    at: datetime
    actor: str
    action: str
    target: str | None
    outcome: str
    status: int | None
    request_id: str | None
    replica: str
    detail: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The event as the JSON object of its line (without ``prev``)."""
        return {
            "at": self.at.isoformat(timespec="microseconds"),
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "outcome": self.outcome,
            "status": self.status,
            "request_id": self.request_id,
            "replica": self.replica,
            "detail": self.detail,
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> AuditEvent:
        """The event of a line's JSON object.

        Raises:
            ValueError, KeyError, TypeError: not an audit line.
        """
        at = datetime.fromisoformat(document["at"])
        if at.tzinfo is None:
            raise ValueError("the time has no time zone")
        detail = document.get("detail") or {}
        if not isinstance(detail, dict):
            raise TypeError("detail is not an object")
        return cls(
            at=at.astimezone(UTC),
            actor=str(document["actor"]),
            action=str(document["action"]),
            target=_optional_str(document.get("target")),
            outcome=str(document["outcome"]),
            status=None if document.get("status") is None else int(document["status"]),
            request_id=_optional_str(document.get("request_id")),
            replica=str(document.get("replica", "")),
            detail=detail,
        )


def opaque(value: str) -> str:
    """The opaque key of ``value`` (an image id): the datastore's folder name for it."""
    return hashlib.sha256(value.encode()).hexdigest()[:32]


class AuditLog:
    """Appends events to this host's file of ``WORKSPACE/audit/``.

    Args:
        workspace: the workspace folder.
    """

    def __init__(self, workspace: Path) -> None:
        self.folder = Path(workspace) / _FOLDER
        self.host = _host()

    def record(
        self,
        *,
        actor: str,
        action: str,
        target: str | None = None,
        outcome: str = "ok",
        status: int | None = None,
        request_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> AuditEvent:
        """Append one event, fsynced, and return it.

        Raises:
            ValueError: a value is too long (patient data, probably), or ``outcome`` is unknown.
            OSError: the log cannot be written (a full disk); the caller decides.
        """
        event = AuditEvent(
            at=datetime.now(UTC),
            actor=_checked("actor", actor),
            action=_checked("action", action),
            target=None if target is None else _checked("target", target),
            outcome=str(Outcome(outcome)),
            status=status,
            request_id=None if request_id is None else _checked("request_id", request_id),
            replica=owner_tag().strip("@"),
            detail={str(k): _checked_detail(str(k), v) for k, v in (detail or {}).items()},
        )
        self._append(event.to_json())
        return event

    def _append(self, document: dict[str, Any]) -> None:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        while True:
            path = _chain(self.folder, self.host)[-1]
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if _chain(self.folder, self.host)[-1] != path:
                    continue  # another process started the next file meanwhile
                if os.fstat(fd).st_size >= ROTATE_BYTES:
                    with contextlib.suppress(FileExistsError):
                        os.close(os.open(_numbered(path, 1), os.O_CREAT | os.O_EXCL, 0o600))
                    continue
                prev, ended = _last_line_hash(path)
                line = json.dumps({**document, "prev": prev}, separators=(",", ":")).encode()
                if len(line) + 1 > MAX_LINE_BYTES:
                    raise ValueError(f"the audit event is over {MAX_LINE_BYTES} bytes")
                data = (b"" if ended else b"\n") + line + b"\n"
                if os.write(fd, data) != len(data):  # a full disk: the next line starts anew
                    raise OSError(errno.ENOSPC, f"{path.name}: the audit line was cut short")
                os.fsync(fd)
                return
            finally:
                os.close(fd)  # releases the lock


def read_events(
    workspace: Path,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
) -> list[AuditEvent]:
    """Every host's events in time order, those matching all the filters given.

    Lines that cannot be parsed are left out (:func:`verify_log` reports them).

    Args:
        workspace: the workspace folder.
        since: events at or after (aware).
        until: events before (aware).
        actor, action, target: equal to.
    """
    wanted = {"actor": actor, "action": action, "target": target}
    events = []
    for paths in _chains(Path(workspace) / _FOLDER).values():
        for path in paths:
            for _, line in _lines(path):
                event = _parse(line)
                if (
                    event is None
                    or (since is not None and event.at < since)
                    or (until is not None and event.at >= until)
                    or any(v is not None and getattr(event, k) != v for k, v in wanted.items())
                ):
                    continue
                events.append(event)
    return sorted(events, key=lambda e: e.at)


def verify_log(workspace: Path) -> list[str]:
    """Recompute every host's hash chain; the problems found (an empty list: intact).

    Each problem names the file and line: a line that does not follow the one before (that one
    edited, or lines deleted or reordered), an unparseable line, a truncated last line, a missing
    file of a host's sequence.
    """
    problems = []
    for _, paths in sorted(_chains(Path(workspace) / _FOLDER).items()):
        expected, next_number = GENESIS, 0
        for path in paths:
            number = _number(path)
            problems += [
                f"{_numbered(path, n - number).name}: missing" for n in range(next_number, number)
            ]
            next_number = number + 1
            for line_number, line in _lines(path):
                where = f"{path.name} line {line_number}"
                document = _document(line)
                if not line.endswith(b"\n"):
                    problems.append(f"{where}: truncated (no newline at the end)")
                elif document is None or _parse(line) is None:
                    problems.append(f"{where}: not an audit event")
                if document is not None and document.get("prev") != expected:
                    problems.append(
                        f"{where}: does not follow the line before "
                        "(edited, or lines deleted or reordered)"
                    )
                expected = _digest(line.removesuffix(b"\n"))
    return problems


def _host() -> str:
    """This host's name as a file name: never ending in ``.<digits>`` (a file's number)."""
    host = owner_tag().split("@")[1]
    return f"{host}_" if re.search(r"\.[0-9]+$", host) else host


def _checked(name: str, value: str) -> str:
    if len(value) > MAX_VALUE_CHARS:
        raise ValueError(
            f"audit {name} is over {MAX_VALUE_CHARS} characters: pass opaque keys, no patient data"
        )
    return value


def _checked_detail(key: str, value: Any) -> Any:
    text = value if isinstance(value, str) else json.dumps(value)
    _checked(f"detail {key!r}", text)
    _checked("detail key", key)
    return value


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _digest(line: bytes) -> str:
    """The ``prev`` that follows ``line`` (given without its newline)."""
    return hashlib.sha256(line).hexdigest()


def _document(line: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(line)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def _parse(line: bytes) -> AuditEvent | None:
    document = _document(line)
    if document is None:
        return None
    try:
        return AuditEvent.from_json(document)
    except (ValueError, KeyError, TypeError):
        return None


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(number, line)`` of a file, from 1; each line with its newline (the last may lack it)."""
    try:
        with path.open("rb") as stream:
            yield from enumerate(stream, start=1)
    except FileNotFoundError:
        return


def _number(path: Path) -> int:
    match = _FILE.match(path.name)
    return int(match["n"] or 0) if match else 0


def _numbered(path: Path, step: int) -> Path:
    """The file ``step`` after ``path`` in its host's sequence."""
    match = _FILE.match(path.name)
    assert match is not None
    n = int(match["n"] or 0) + step
    return path.with_name(f"{match['host']}.{n}.jsonl" if n else f"{match['host']}.jsonl")


def _chains(folder: Path) -> dict[str, list[Path]]:
    """Each host's files in order."""
    found: dict[str, list[Path]] = {}
    for path in folder.glob("*.jsonl") if folder.is_dir() else []:
        match = _FILE.match(path.name)
        if match and path.is_file():
            found.setdefault(match["host"], []).append(path)
    return {host: sorted(paths, key=_number) for host, paths in found.items()}


def _chain(folder: Path, host: str) -> list[Path]:
    """This host's files in order (its first file, not yet written, when it has none)."""
    return _chains(folder).get(host) or [folder / f"{host}.jsonl"]


def _last_line_hash(path: Path) -> tuple[str, bool]:
    """The ``prev`` of the next line of ``path``, and whether the file ends with a newline.

    Reads back from the end only as far as the last line; an empty file continues the chain of
    the file before it.
    """
    with path.open("rb") as stream:
        end = stream.seek(0, os.SEEK_END)
        if end == 0:
            return (
                GENESIS if _number(path) == 0 else _last_line_hash(_numbered(path, -1))[0]
            ), True
        stream.seek(end - 1)
        ended = stream.read(1) == b"\n"
        position = end - 1 if ended else end  # the last line's own newline is left out
        tail = b""
        while position > 0 and b"\n" not in tail:
            step = min(_TAIL_CHUNK, position)
            position -= step
            stream.seek(position)
            tail = stream.read(step) + tail
    return _digest(tail.rpartition(b"\n")[2]), ended
