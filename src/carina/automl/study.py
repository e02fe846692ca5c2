"""An AutoML study of an archive on Optuna: its storage, its trials and the workers that run them.

The study lives in one Optuna storage: a journal file (default
``<archive>/automl/<study>/study.journal``; on shared storage such as EFS it serves several
machines) or a database URL (``postgresql://...``). Everything a worker needs is in the storage:
the archive's path, the epochs per trial, the pruner; so ``carina automl worker --study NAME
--storage URL`` on any machine that sees the archive joins a running study.

Trials are queued in the storage when the study is created: the first replays the archive's own
values, the others are sampled (TPE) when a worker takes them. A worker takes queued trials one at a
time until none is left, so the study runs exactly the asked number of trials however many workers
share it. Each running trial carries a heartbeat (its worker's host and pid, refreshed every few
seconds); a trial whose worker died (same host, pid gone) or whose heartbeat is older than
``stale_after`` is marked failed and queued again with the same values, once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from carina.archive import Archive
from carina.archive.search import SearchSpace, apply
from carina.automl.space import distributions, own_params, suggest
from carina.errors import CarinaError, ConfigError

log = logging.getLogger(__name__)

HEARTBEAT_S = 5.0
PRUNERS = ("median", "hyperband", "none")
WORKER = "carina_worker"
HEARTBEAT = "carina_heartbeat"
RETRY_OF = "carina_retry_of"
FIRST = "carina_archive_values"


class AutoMLError(CarinaError):
    """A study cannot start or go on (the message says why)."""


@dataclass
class StudySpec:
    """What a study searches and how.

    Attributes:
        archive: the archive folder (its ``config_train.json`` holds the search blocks).
        study: the study's name.
        storage: a database URL, or the path of a journal file (default under the archive).
        trials: trials to run in all (the first replays the archive's own values).
        epochs_per_trial: epochs of each trial (default: the archive's own ``epochs``).
        pruner: ``median``, ``hyperband`` or ``none``.
        stale_after: seconds without a heartbeat after which a running trial counts as dead.
    """

    archive: Path
    study: str
    storage: str | None = None
    trials: int = 20
    epochs_per_trial: int | None = None
    pruner: str = "median"
    stale_after: float = 120.0

    def __post_init__(self) -> None:
        self.archive = Path(self.archive).resolve()
        if not self.study or not all(c.isalnum() or c in "-_." for c in self.study):
            raise ConfigError("--study", self.study, "a study name is letters, digits, '-', '_'")
        if self.trials < 1:
            raise ConfigError("--trials", str(self.trials), "must be >= 1")
        if self.pruner not in PRUNERS:
            raise ConfigError("--pruner", self.pruner, f"give {', '.join(PRUNERS)}")
        if self.storage is None:
            self.storage = str(study_dir(self.archive, self.study) / "study.journal")


def study_dir(archive: Path, study: str) -> Path:
    """``<archive>/automl/<study>``: trials, results and the default journal."""
    return Path(archive) / "automl" / study


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """A database URL (``postgresql://``, ``sqlite:///``) or a journal file path.

    Raises:
        AutoMLError: the database cannot be reached (its message quoted).
    """
    if "://" in url:
        try:
            # No pool: a connection per call, closed after it (a few calls a second at most), so
            # that no worker holds idle connections or leaves them open when it ends.
            from sqlalchemy.pool import NullPool

            return optuna.storages.RDBStorage(url, engine_kwargs={"poolclass": NullPool})
        except Exception as exc:  # SQLAlchemy's errors: a driver missing, no server, bad login
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc)
            raise AutoMLError(f"storage {_safe_url(url)}: {first}") from None
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    path = Path(url).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    # The open(2)-based lock works on NFS/EFS, where the default symlink lock may not.
    backend = JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
    return optuna.storages.JournalStorage(backend)


def _safe_url(url: str) -> str:
    """A database URL without its password."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if at and ":" in credentials:
        rest = f"{credentials.partition(':')[0]}:***@{host}"
    return scheme + sep + rest


def signature(space: SearchSpace) -> str:
    """The search space as text, to tell whether a resumed study still searches the same."""
    return json.dumps(
        {name: repr(dist) for name, dist in sorted(distributions(space).items())}, sort_keys=True
    )


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    """Median (after 2 finished trials, from epoch 2), Hyperband over the epochs, or none."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=max(epochs, 2), reduction_factor=3
        )
    return optuna.pruners.NopPruner()


def create_or_resume(spec: StudySpec) -> optuna.Study:
    """Create the study and queue its trials, or resume it (queueing more if ``trials`` grew).

    Raises:
        ConfigError: the archive has no search blocks, or a broken one.
        AutoMLError: the study exists for another archive, or its search space changed.
    """
    archive = Archive.open(spec.archive)
    space = archive.search_space()
    if not space:
        raise ConfigError(
            "config_train.json", "search", "no search blocks: nothing for AutoML to search"
        )
    epochs = spec.epochs_per_trial or archive.train_config().settings.epochs
    assert spec.storage is not None
    storage = open_storage(spec.storage)
    study = optuna.create_study(
        study_name=spec.study, storage=storage, direction="maximize", load_if_exists=True
    )
    attrs = study.user_attrs
    if not attrs:
        study.set_user_attr("archive", str(spec.archive))
        study.set_user_attr("epochs_per_trial", epochs)
        study.set_user_attr("pruner", spec.pruner)
        study.set_user_attr("stale_after", spec.stale_after)
        study.set_user_attr("space", signature(space))
        study.set_user_attr("trials", 0)
        study.set_user_attr("created", datetime.now(UTC).isoformat(timespec="seconds"))
    else:
        if attrs.get("archive") != str(spec.archive):
            raise AutoMLError(
                f"study {spec.study!r} in this storage searches {attrs.get('archive')}; "
                "give another --study name"
            )
        if attrs.get("space") != signature(space):
            raise AutoMLError(
                f"the search blocks of {archive.name} changed since study {spec.study!r} began; "
                "start a new --study"
            )
    queued = int(study.user_attrs.get("trials", 0))
    for number in range(queued, spec.trials):
        if number == 0:
            study.enqueue_trial(own_params(space), user_attrs={FIRST: True})
        else:
            study.enqueue_trial({})
    if spec.trials > queued:
        study.set_user_attr("trials", spec.trials)
    return study


def load(storage: str, study: str) -> optuna.Study:
    """An existing study (without sampler or pruner: :func:`run_worker` adds them).

    Raises:
        AutoMLError: no such study in the storage.
    """
    try:
        return optuna.load_study(study_name=study, storage=open_storage(storage))
    except KeyError:
        raise AutoMLError(f"no study {study!r} in {_safe_url(storage)}") from None


@dataclass
class WorkerReport:
    """What one worker did."""

    ran: list[int] = field(default_factory=list)
    recovered: list[int] = field(default_factory=list)


def run_worker(
    storage: str,
    study_name: str,
    *,
    data_dir: Path,
    archive: Path | None = None,
    deadline: float | None = None,
    device: str | None = None,
) -> WorkerReport:
    """Take queued trials of the study and run them until none is left (or ``deadline``).

    While other workers still run trials this one waits, so that it can take over a trial whose
    worker dies.
    """
    study = load(storage, study_name)
    attrs = study.user_attrs
    folder = Path(archive or attrs["archive"])
    epochs = int(attrs["epochs_per_trial"])
    stale_after = float(attrs.get("stale_after", 120.0))
    with warnings.catch_warnings():  # multivariate TPE is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.sampler = optuna.samplers.TPESampler(n_startup_trials=4, multivariate=True)
    study.pruner = make_pruner(str(attrs.get("pruner", "median")), epochs)
    source = Archive.open(folder)
    space = source.search_space()
    if signature(space) != attrs.get("space"):
        raise AutoMLError(f"the search blocks of {source.name} changed since the study began")
    _warm_up(source, data_dir, device)
    report = WorkerReport()
    results = study_dir(folder, study_name)
    while deadline is None or time.time() < deadline:
        report.recovered += recover_stale(study, stale_after)
        trial = claim(study)
        if trial is None:
            if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                break
            time.sleep(HEARTBEAT_S)
            continue
        run_trial(study, trial, source, space, results, epochs, data_dir, device)
        report.ran.append(trial.number)
    return report


def _warm_up(source: Archive, data_dir: Path, device: str | None) -> None:
    """Pay the worker's one-time costs before its first trial: torch, MONAI's engines and
    handlers, TensorBoard, every component of the config and the data (exported if need be)."""
    import torch.utils.tensorboard  # noqa: F401 - slow first import
    from monai import engines, handlers  # noqa: F401 - what the first trial would import

    from carina.engine.train import TrainOptions, check_training

    check_training(source, TrainOptions(data_dir=data_dir, device=device))


def claim(study: optuna.Study) -> optuna.Trial | None:
    """Take the oldest queued trial (atomically: one worker gets it), or None when none is left.

    Only queued trials are ever run: ``study.ask`` would make a new one when the queue is empty,
    and the study would overrun its number of trials.
    """
    trial_id = study._pop_waiting_trial_id()  # the queue-popping half of Study.ask
    if trial_id is None:
        return None
    trial = optuna.Trial(study, trial_id)
    trial.set_user_attr(WORKER, f"{socket.gethostname()}:{os.getpid()}")
    trial.set_user_attr(HEARTBEAT, time.time())
    return trial


def recover_stale(study: optuna.Study, stale_after: float) -> list[int]:
    """Fail the running trials whose worker is gone and queue each once more; return their
    numbers. A trial that was itself a retry is failed, not retried again."""
    import psutil

    host = socket.gethostname()
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = str(trial.user_attrs.get(WORKER, ""))
        beat = float(trial.user_attrs.get(HEARTBEAT, 0.0)) or (
            trial.datetime_start.timestamp() if trial.datetime_start else time.time()
        )
        worker_host, _, pid = worker.rpartition(":")
        gone = worker_host == host and pid.isdigit() and not psutil.pid_exists(int(pid))
        if not gone and time.time() - beat < stale_after:
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except (ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # another worker got there first, or the trial just finished
        log.warning("trial %d: its worker %s is gone; marked failed", trial.number, worker)
        recovered.append(trial.number)
        if RETRY_OF not in trial.user_attrs:
            study.enqueue_trial(dict(trial.params), user_attrs={RETRY_OF: trial.number})
    return recovered


@contextlib.contextmanager
def heartbeat(trial: optuna.Trial) -> Iterator[None]:
    """Refresh the trial's heartbeat every few seconds while the block runs."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):  # a storage hiccup must not kill the trial
                trial.set_user_attr(HEARTBEAT, time.time())

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def trial_folder(results: Path, number: int) -> Path:
    """``<archive>/automl/<study>/trials/0007``."""
    return results / "trials" / f"{number:04d}"


def run_trial(
    study: optuna.Study,
    trial: optuna.Trial,
    source: Archive,
    space: SearchSpace,
    results: Path,
    epochs: int,
    data_dir: Path,
    device: str | None,
) -> TrialState:
    """Write the trial's archive (the source's configs with the sampled values), train it, report
    validation Dice after every epoch to the pruner, and tell the study the outcome."""
    from carina.archive.schema import read_json
    from carina.automl.trial import TrialTraining
    from carina.engine.train import TrainOptions

    started = time.perf_counter()
    folder = trial_folder(results, trial.number)
    with heartbeat(trial):
        try:
            values = suggest(trial, space)
            _write_trial_archive(source, folder, apply(read_json(source.layout.train_config),
                                                       values, space), epochs)  # fmt: skip
            options = TrainOptions(data_dir=data_dir, device=device)
            result = TrialTraining(Archive.open(folder), options, trial, epochs=epochs).execute()
        except Exception as exc:  # the trial fails; the study goes on
            message = str(exc) if isinstance(exc, CarinaError) else f"{type(exc).__name__}: {exc}"
            log.error("trial %d failed: %s", trial.number, message)
            trial.set_user_attr("error", message[:500])
            study.tell(trial, state=TrialState.FAIL)
            return TrialState.FAIL
        trial.set_user_attr("train_seconds", round(result.seconds, 3))
        trial.set_user_attr("epochs", result.epochs)
        trial.set_user_attr("trial_seconds", round(time.perf_counter() - started, 3))
    if result.stopped:
        study.tell(trial, state=TrialState.PRUNED)
        return TrialState.PRUNED
    if result.best_metric is None:  # no validation scored: nothing to compare
        trial.set_user_attr("error", "no validation Dice (validation never scored)")
        study.tell(trial, state=TrialState.FAIL)
        return TrialState.FAIL
    study.tell(trial, result.best_metric)
    return TrialState.COMPLETE


def _write_trial_archive(
    source: Archive, folder: Path, config: dict[str, Any], epochs: int
) -> None:
    """The trial's own archive: the source's configs, its ``config_train.json`` with the values."""
    config["epochs"] = epochs
    if folder.exists():
        shutil.rmtree(folder)  # a retried trial starts clean
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source.layout.root / "config", staging / "config")
    (staging / "config" / "config_train.json").write_text(json.dumps(config, indent=2) + "\n")
    (staging / "models").mkdir()
    staging.rename(folder)


@dataclass
class Summary:
    """The state of a study at a glance."""

    total: int
    complete: int
    pruned: int
    failed: int
    running: int
    waiting: int
    best_value: float | None
    best_trial: int | None

    @property
    def done(self) -> int:
        """Trials finished (complete or pruned)."""
        return self.complete + self.pruned


def summarize(study: optuna.Study) -> Summary:
    """Count the study's trials by state; the best value so far."""
    trials = study.get_trials(deepcopy=False)
    count = dict.fromkeys(TrialState, 0)
    for trial in trials:
        count[trial.state] += 1
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    best = max(complete, key=lambda t: float(t.value or 0.0)) if complete else None
    return Summary(
        total=int(study.user_attrs.get("trials", len(trials))),
        complete=count[TrialState.COMPLETE],
        pruned=count[TrialState.PRUNED],
        failed=count[TrialState.FAIL],
        running=count[TrialState.RUNNING],
        waiting=count[TrialState.WAITING],
        best_value=float(best.value) if best is not None and best.value is not None else None,
        best_trial=best.number if best is not None else None,
    )
