"""``carina audit``: read and verify the audit log of a workspace (``WORKSPACE/audit/``)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from carina.cli.console import console, err_console

if TYPE_CHECKING:
    from carina.audit import AuditEvent

_AGO = re.compile(r"^(?P<count>[0-9]+)(?P<unit>[smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
#: ``image:<key>`` or ``label:<key>/<tag>``: a key the datastore names an image's folder by.
_KEYED = re.compile(r"^(?P<kind>image|label):(?P<key>[0-9a-f]{32})(?P<rest>/.*)?$")
_COLUMNS = ("time", "actor", "action", "target", "outcome", "status")


def audit(
    workspace: Path = typer.Option(Path("workspace"), help="Workspace folder (audit/ inside)."),
    since: str | None = typer.Option(
        None, help="Events from this time: ISO 8601 (UTC unless it says) or ago: 30m, 1h, 2d."
    ),
    actor: str | None = typer.Option(None, help="Only this user's events."),
    action: str | None = typer.Option(None, help="Only this action (read, save_label, ...)."),
    target: str | None = typer.Option(
        None, help="Only this target: image:ID (or image:KEY), label:KEY/TAG, model:NAME."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="One JSON object per line, as recorded (opaque keys)."
    ),
    verify: bool = typer.Option(
        False, "--verify", help="Check every file's hash chain; exit 1 on any problem."
    ),
) -> None:
    """Show who did what to which image, label or model (newest last), or verify the log."""
    from carina.audit import read_events, verify_log

    if verify:
        problems = verify_log(workspace)
        for problem in problems:
            console.print(problem, highlight=False, markup=False, soft_wrap=True)
        if problems:
            raise typer.Exit(code=1)
        console.print("the audit log is intact", highlight=False)
        return
    events = read_events(
        workspace,
        since=None if since is None else parse_since(since, now=datetime.now(UTC)),
        actor=actor,
        action=action,
        target=None if target is None else _as_recorded(target),
    )
    if as_json:
        for event in events:
            console.print(
                json.dumps(event.to_json()), highlight=False, markup=False, soft_wrap=True
            )
    elif events:
        for line in table(events, ids=_image_ids(workspace, events)):
            console.print(line, highlight=False, markup=False, soft_wrap=True)
    else:
        err_console.print("no audit events")


def parse_since(text: str, *, now: datetime) -> datetime:
    """``1h``, ``2d``, ... before ``now``, or an ISO 8601 time (UTC when it names no zone).

    Raises:
        typer.BadParameter: neither.
    """
    ago = _AGO.match(text.strip())
    if ago:
        return now - timedelta(**{_UNITS[ago["unit"]]: int(ago["count"])})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is neither an ISO 8601 time nor an age like 30m, 1h, 2d",
            param_hint="--since",
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def table(events: list[AuditEvent], *, ids: dict[str, str]) -> list[str]:
    """The events as aligned text lines under a header; keys found in ``ids`` shown as ids."""
    rows = [_COLUMNS] + [
        (
            event.at.isoformat(timespec="seconds"),
            event.actor,
            event.action,
            _shown_target(event.target, ids),
            event.outcome,
            "" if event.status is None else str(event.status),
        )
        for event in events
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _shown_target(target: str | None, ids: dict[str, str]) -> str:
    keyed = _KEYED.match(target or "")
    if keyed is None or keyed["key"] not in ids:
        return target or ""
    return f"{keyed['kind']}:{ids[keyed['key']]}{keyed['rest'] or ''}"


def _as_recorded(target: str) -> str:
    """``image:<id>`` as the log records it (``image:<key>``); other targets as given."""
    from carina.audit import opaque

    kind, _, value = target.partition(":")
    if kind == "image" and value and not _KEYED.match(target):
        return f"image:{opaque(value)}"
    return target


def _image_ids(workspace: Path, events: list[AuditEvent]) -> dict[str, str]:
    """Key -> id of the events' images still in the datastore (the ``id`` of their info.json)."""
    keys = {keyed["key"] for e in events if (keyed := _KEYED.match(e.target or ""))}
    ids = {}
    for key in keys:
        try:
            info = json.loads((workspace / "datastore" / "images" / key / "info.json").read_text())
            ids[key] = str(info["id"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # deleted, or half written
    return ids
