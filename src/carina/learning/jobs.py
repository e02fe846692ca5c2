"""Training jobs from a datastore: train a copy of an archive on the final labels, score it and
the served model on the same validation images, promote the better one.

One job per model at a time, across replicas: the job holds ``WORKSPACE/jobs/NAME.lock`` (its
owner's host and pid inside, touched as it works), so a job killed with SIGKILL never blocks the
next one. Each job writes ``WORKSPACE/jobs/NAME/<job id>/job.json`` (status, progress: epoch,
loss, validation Dice; then both figures and the decision) and trains in that folder, so the
served model is untouched until the promotion's single rename. A ``stop`` file in the job folder
(:func:`request_stop`) ends it at the next iteration.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from carina.archive import Archive
from carina.datastore import LocalDatastore, open_datastore
from carina.errors import CarinaError, DatastoreError, WorkCancelledError
from carina.files import (
    atomic_write_bytes,
    exclusive_lock,
    is_stale,
    lock_holder,
    owner_tag,
    touch,
)
from carina.learning.promotion import Decision, decide, promote, record_refusal
from carina.learning.training_set import write_training_set

#: A lock not touched for this long (seconds) belongs to a job that is gone.
LOCK_MAX_AGE = 600.0
#: Job states, as MONAI Label names them.
SUBMITTED, RUNNING, DONE, ERROR, STOPPED = "SUBMITTED", "RUNNING", "DONE", "ERROR", "STOPPED"


class JobStoppedError(CarinaError):
    """The job was asked to stop."""


@dataclass(frozen=True)
class JobResult:
    """A finished job: its id and folder, and the decision on the served model."""

    job: str
    folder: Path
    decision: Decision


def train_from_datastore(
    archive: Path,
    workspace: Path,
    *,
    max_bytes: int,
    data_dir: Path,
    device: str | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> JobResult:
    """Train ``archive`` on the workspace's final labels and promote the result if it is no worse
    than the served model (``WORKSPACE/models/<archive name>``; installed when there is none).

    Raises:
        DatastoreError: another job of this model runs, or too few final labels.
        ConfigError, ArchiveError: the archive cannot be trained.
    """
    name = Archive.open(archive).name
    lock = workspace / "jobs" / f"{name}.lock"
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(exclusive_lock(lock, max_age=LOCK_MAX_AGE))
        except FileExistsError as exc:
            raise DatastoreError(f"a training job of {name!r} is already running ({exc})") from exc
        return _run(archive, workspace, name, lock, max_bytes, data_dir, device, progress)


def start_training(archive: Path, workspace: Path, *, device: str | None = None) -> int:
    """Start :func:`train_from_datastore` as a background process (``carina train ARCHIVE
    --datastore WORKSPACE``, in a session of its own so that it outlives the caller); returns its
    pid. Follow it with :func:`latest_job`, stop it with :func:`request_stop`; its output goes to
    ``WORKSPACE/jobs/NAME.log``.

    Until the process writes its job record, :func:`job_status` reports the job as
    ``SUBMITTED`` (from ``WORKSPACE/jobs/NAME.submitted``), so that every replica sees at once
    that training was started.

    Raises:
        DatastoreError: a job of this model is already running.
    """
    name = Archive.open(archive).name
    current = job_status(workspace, name)
    if current is not None and current.get("status") in (SUBMITTED, RUNNING):
        raise DatastoreError(f"a training job of {name!r} is already running")
    command = [sys.executable, "-m", "carina", "train", str(archive), "--datastore", str(workspace)]
    if device:
        command += ["--device", device]
    log = workspace / "jobs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    output = [(os.POSIX_SPAWN_OPEN, 1, str(log), flags, 0o644), (os.POSIX_SPAWN_DUP2, 1, 2)]
    pid = os.posix_spawn(sys.executable, command, os.environ, file_actions=output, setsid=True)
    marker = {"id": f"submitted-{_job_id()}", "model": name, "status": SUBMITTED}
    marker.update(start_ts=_now(), owner=owner_tag(pid))
    atomic_write_bytes(_marker(workspace, name), json.dumps(marker).encode())
    return pid


def job_status(workspace: Path, name: str) -> dict[str, Any] | None:
    """What the newest job of model ``name`` is doing: its record; ``SUBMITTED`` while a
    started process has not written one yet; ``ERROR`` for a job whose process is gone
    without finishing (a record left ``RUNNING`` with its lock released or stale, or a
    submitted process that died before it began). None when no job ever ran.
    """
    record = latest_job(workspace, name)
    marker = _read_json(_marker(workspace, name))
    if marker and (record is None or str(record.get("start_ts", "")) < marker["start_ts"]):
        owner = str(marker.get("owner"))
        if marker.get("status") == SUBMITTED and is_stale(
            _marker(workspace, name), max_age=120.0, owner=owner
        ):
            gone = "the job's process ended before it began training (see jobs/NAME.log)"
            return {**marker, "status": ERROR, "details": [gone]}
        return marker
    if record is not None and record.get("status") == RUNNING:
        lock = workspace / "jobs" / f"{name}.lock"
        if not lock.exists() or is_stale(lock, max_age=LOCK_MAX_AGE, owner=lock_holder(lock)):
            gone = "the job's process ended without finishing (killed?)"
            return {**record, "status": ERROR, "details": [gone]}
    return record


def request_stop(workspace: Path, name: str) -> Path | None:
    """Ask the running job of model ``name`` to stop (its folder), or end a submitted one that
    has not begun training (this host's: its process group gets SIGTERM; the workspace's
    ``jobs/NAME.submitted``); None when neither runs."""
    status = job_status(workspace, name)
    if status is not None and status.get("status") == SUBMITTED:
        match = re.fullmatch(r"@(?P<host>[^@]+)@(?P<pid>\d+)@", str(status.get("owner", "")))
        if match and f"@{match['host']}@" in owner_tag():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(match["pid"]), signal.SIGTERM)
        details = ["stopped before it began training"]
        stopped = {**status, "status": STOPPED, "end_ts": _now(), "details": details}
        atomic_write_bytes(_marker(workspace, name), json.dumps(stopped).encode())
        return _marker(workspace, name)
    running = [f for f in _job_folders(workspace, name) if job_record(f).get("status") == RUNNING]
    if not running:
        return None
    (running[-1] / "stop").touch()
    return running[-1]


def job_record(folder: Path) -> dict[str, Any]:
    """A job's ``job.json`` ({} when it has none yet)."""
    return _read_json(folder / "job.json") or {}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def _marker(workspace: Path, name: str) -> Path:
    return workspace / "jobs" / f"{name}.submitted"


def latest_job(workspace: Path, name: str) -> dict[str, Any] | None:
    """The newest job record of model ``name``, or None."""
    folders = _job_folders(workspace, name)
    return job_record(folders[-1]) if folders else None


def _run(
    archive: Path,
    workspace: Path,
    name: str,
    lock: Path,
    max_bytes: int,
    data_dir: Path,
    device: str | None,
    progress: Callable[[dict[str, Any]], None] | None,
) -> JobResult:
    job = _job_id()
    folder = workspace / "jobs" / name / job
    record = _Record(folder / "job.json", {"id": job, "model": name, "status": RUNNING})
    record.update(start_ts=_now())
    try:
        store = open_datastore(workspace, max_bytes=max_bytes)
        if not store.label_names():  # a datastore without names takes the model's
            labels = Archive.open(archive).serving_config().labels
            store.set_label_names(dict(enumerate(labels, start=1)))
        dataset = write_training_set(store, folder / "dataset")
        candidate = _candidate(archive, folder / "candidate")
        served = workspace / "models" / name
        start = served if (served / "models" / "model.pt").is_file() else None
        report = _reporter(record, lock, folder, progress)
        _train(candidate, dataset.parent, start, data_dir, device, report)
        candidate_dice = _score(candidate, dataset.parent, data_dir, device)
        served_dice = _score_copy(served, folder / "served", dataset.parent, data_dir, device)
        decision = decide(job, candidate_dice, served_dice)
        if decision.promoted:
            promote(candidate, workspace / "models", name, decision)
            _refresh_scores(store, workspace / "models" / name, folder, device)
        else:
            record_refusal(workspace / "models", name, decision)
    except JobStoppedError:
        record.update(status=STOPPED, end_ts=_now(), details=["stopped on request"])
        raise
    except BaseException as exc:
        record.update(status=ERROR, end_ts=_now(), details=[str(exc)[:500] or type(exc).__name__])
        raise
    record.update(status=DONE, end_ts=_now(), decision=decision.__dict__, details=[_said(decision)])
    return JobResult(job, folder, decision)


def _candidate(archive: Path, target: Path) -> Path:
    """A copy of the archive's configs and docs to train in (weights come from ``start``)."""
    shutil.copytree(
        Archive.open(archive).layout.root,
        target,
        ignore=shutil.ignore_patterns("models", "eval", "logs", "history", "history.json", ".*"),
    )
    return target


def _train(
    root: Path,
    dataset: Path,
    start: Path | None,
    data_dir: Path,
    device: str | None,
    report: Callable[[dict[str, Any]], None],
) -> None:
    from carina.engine.train import TrainOptions, train_archive

    options = TrainOptions(
        dataset=dataset, data_dir=data_dir, pretrained=start, device=device, progress=report
    )
    train_archive(Archive.open(root), options)


def _score(root: Path, dataset: Path, data_dir: Path, device: str | None) -> float:
    from carina.kinds import validate_archive

    result = validate_archive(Archive.open(root), dataset=dataset, data_dir=data_dir, device=device)
    return float(result.mean_dice)


def _score_copy(
    served: Path, target: Path, dataset: Path, data_dir: Path, device: str | None
) -> float | None:
    """The served model's score, on a copy (scoring writes eval/ into the archive it scores)."""
    if not (served / "models" / "model.pt").is_file():
        return None
    shutil.copytree(served, target, ignore=shutil.ignore_patterns("history", "logs", "eval"))
    return _score(target, dataset, data_dir, device)


def _refresh_scores(store: LocalDatastore, served: Path, folder: Path, device: str | None) -> None:
    """Score the unlabelled images with the new model (segmentation models; bounded), so the
    next-image strategies are ready; a stop request ends it."""
    from carina.learning.scores import SCORE_REFRESH_LIMIT, refresh_scores

    if Archive.open(served).serving_config().type not in ("segmentation", "others"):
        return
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_stop, args=(folder / "stop", stop), daemon=True)
    watcher.start()
    try:
        refresh_scores(store, served, limit=SCORE_REFRESH_LIMIT, cancelled=stop, device=device)
    except WorkCancelledError:
        pass
    finally:
        stop.set()


def _watch_stop(path: Path, stop: threading.Event) -> None:
    while not stop.wait(0.5):
        if path.exists():
            stop.set()


def _reporter(
    record: _Record, lock: Path, folder: Path, progress: Callable[[dict[str, Any]], None] | None
) -> Callable[[dict[str, Any]], None]:
    """The training progress callback: the job record (at most once a second), the lock's
    heartbeat, the stop request, and the caller's own callback."""
    last = [0.0]

    def report(values: dict[str, Any]) -> None:
        if (folder / "stop").exists():
            raise JobStoppedError("the job was asked to stop")
        if progress is not None:
            progress(values)
        if time.monotonic() - last[0] >= 1.0:
            last[0] = time.monotonic()
            touch(lock)
            keys = ("epoch", "epochs", "iteration", "iterations", "loss", "best_val_dice")
            record.update(progress={k: values.get(k) for k in keys})

    return report


def _said(decision: Decision) -> str:
    served = "none" if decision.served_dice is None else f"{decision.served_dice:.4f}"
    verdict = "promoted" if decision.promoted else "refused (the served model stays)"
    return f"candidate {decision.candidate_dice:.4f} vs served {served}: {verdict}"


def _job_folders(workspace: Path, name: str) -> list[Path]:
    folder = workspace / "jobs" / name
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _job_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


class _Record:
    """A job's ``job.json``, rewritten atomically on each update."""

    def __init__(self, path: Path, values: dict[str, Any]) -> None:
        self.path = path
        self.values = values
        path.parent.mkdir(parents=True, exist_ok=True)

    def update(self, **changes: Any) -> None:
        self.values.update(changes)
        atomic_write_bytes(self.path, json.dumps(self.values, indent=2, default=str).encode())
