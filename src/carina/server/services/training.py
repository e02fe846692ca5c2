"""Training on the datastore as MONAI Label's clients drive it: trainers, tasks, the status
codes the plugins read, stopping, and the figures ``/info/`` shows (``train_stats``)."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from carina.errors import (
    DatastoreError,
    NotFoundError,
    TooManyRequestsError,
)
from carina.kinds import Guidance
from carina.server.services.registry import ModelInfo, ModelRegistry

log = logging.getLogger("carina.server")


def trainable(registry: ModelRegistry) -> list[ModelInfo]:
    """The models a datastore can train: automatic segmentation models with a training config."""
    return [
        info
        for info in registry.models()
        if info.kind.guidance == Guidance.NONE
        and (registry.folder / info.name / "config" / "config_train.json").is_file()
    ]


# -- training -------------------------------------------------------------------------------------


def trainer(registry: ModelRegistry, name: str) -> ModelInfo:
    """The trainable model ``name``.

    Raises:
        NotFoundError: no model of that name, or one the datastore cannot train.
    """
    for info in trainable(registry):
        if info.name == name:
            return info
    known = ", ".join(info.name for info in trainable(registry)) or "none"
    raise NotFoundError(f"no trainer {name[:64]!r} (trainers: {known})")


def start(
    registry: ModelRegistry, workspace: Path, name: str, device: str | None
) -> dict[str, Any]:
    """Start training ``name`` on the datastore; the task as the plugins read it.

    Raises:
        NotFoundError: not a trainer.
        TooManyRequestsError: a job of this model is already running (HTTP 429, as the
            plugins expect).
    """
    from carina.learning import job_status, start_training

    info = trainer(registry, name)
    try:
        start_training(registry.folder / info.name, workspace, device=device)
    except DatastoreError as exc:
        raise TooManyRequestsError(str(exc), retry_after=30) from exc
    return task(job_status(workspace, info.name) or {})


def running(registry: ModelRegistry, workspace: Path) -> dict[str, Any] | None:
    """The task of a job submitted or running, across every trainer (None: none)."""
    from carina.learning import RUNNING, SUBMITTED, job_status

    for info in trainable(registry):
        status = job_status(workspace, info.name)
        if status is not None and status.get("status") in (SUBMITTED, RUNNING):
            return task(status)
    return None


def last_task(registry: ModelRegistry, workspace: Path) -> dict[str, Any] | None:
    """The newest task of any trainer (None: no job ever ran)."""
    from carina.learning import job_status

    tasks = [job_status(workspace, info.name) for info in trainable(registry)]
    found = [t for t in tasks if t]
    return task(max(found, key=lambda t: str(t.get("start_ts", "")))) if found else None


def stop(registry: ModelRegistry, workspace: Path) -> dict[str, Any] | None:
    """Ask every running job to stop; the task (with a non-empty ``details``: Slicer reads
    its last line) of the one stopped, else the newest one, else None."""
    from carina.learning import RUNNING, SUBMITTED, job_status, request_stop

    stopped = None
    for info in trainable(registry):
        status = job_status(workspace, info.name)
        if status is None or status.get("status") not in (SUBMITTED, RUNNING):
            continue
        request_stop(workspace, info.name)
        stopped = {**status, "details": [*status.get("details", []), "stop requested"]}
    if stopped is not None:
        return task(stopped)
    newest = last_task(registry, workspace)
    if newest is not None and not newest.get("details"):
        newest["details"] = [f"nothing to stop: the last job is {newest.get('status')}"]
    return newest


def task(record: dict[str, Any]) -> dict[str, Any]:
    """A job record as a MONAI Label task: ``id``, ``status``, ``start_ts``, ``end_ts``,
    ``details`` (a list), ``progress``; nothing of the host."""
    keys = ("id", "model", "status", "start_ts", "end_ts", "details", "progress", "decision")
    out = {key: record[key] for key in keys if key in record}
    out.setdefault("details", [])
    return out


def train_stats(workspace: Path, name: str) -> dict[str, Any]:
    """The last job's figures as both plugins read them: ``epoch``, ``total_epochs``,
    ``best_metric`` (0-1) and, once it finished, ``total_time``."""
    from carina.learning import DONE, ERROR, STOPPED, job_status

    record = job_status(workspace, name)
    if record is None:
        return {}
    progress = record.get("progress") or {}
    stats: dict[str, Any] = {
        "epoch": progress.get("epoch") or 0,
        "total_epochs": progress.get("epochs") or 0,
        "best_metric": float(progress.get("best_val_dice") or 0.0),
        "status": record.get("status"),
        "start_ts": record.get("start_ts"),
    }
    if record.get("status") in (DONE, ERROR, STOPPED) and record.get("end_ts"):
        start_at = datetime.strptime(str(record["start_ts"]), "%Y-%m-%d %H:%M:%S")
        end_at = datetime.strptime(str(record["end_ts"]), "%Y-%m-%d %H:%M:%S")
        stats["total_time"] = str(end_at - start_at)
    return stats
