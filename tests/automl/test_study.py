"""Studies on a journal file with local workers: pruning, the first trial, results, recovery of a
trial whose worker died."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from carina.archive import Archive
from carina.automl.run import run_study
from carina.automl.space import suggest
from carina.automl.study import (
    HEARTBEAT,
    RETRY_OF,
    WORKER,
    StudySpec,
    claim,
    create_or_resume,
    load,
    recover_stale,
    study_dir,
)
from tests.automl.conftest import POOR_LR, queue_with_a_poor_last_trial, search_archive

pytestmark = pytest.mark.integration


def check_finished_study(archive: Path, study: str, storage: str, trials: int) -> None:
    """The acceptance of a finished study, whatever its storage."""
    loaded = load(storage, study)
    states = [trial.state for trial in loaded.trials]
    numbers = [trial.number for trial in loaded.trials]
    assert len(numbers) == len(set(numbers)) == trials, "every trial recorded once"
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == trials
    assert states.count(TrialState.PRUNED) >= 1, "the pruner stopped at least one trial"
    first = loaded.trials[0]
    assert first.params["learning_rate"] == POOR_LR, "trial 0 replays the archive's own values"
    assert first.state == TrialState.COMPLETE
    assert loaded.best_value >= float(first.value or 0.0) + 0.05
    folder = study_dir(archive, study)
    rows = list(csv.DictReader((folder / "trials.csv").read_text().splitlines()))
    assert [int(row["number"]) for row in rows] == list(range(trials))
    best = folder / "best"
    saved = json.loads((best / "config" / "config_train.json").read_text())
    assert saved["learning_rate"] == pytest.approx(loaded.best_params["learning_rate"])
    assert (best / "models" / "model.pt").is_file()
    assert (folder / "history.png").stat().st_size > 1000


def test_two_workers_on_a_journal_file(tmp_path: Path, data_dir: Path) -> None:
    archive = search_archive(tmp_path / "archive")
    spec = StudySpec(archive=archive, study="lr", trials=12)
    queue_with_a_poor_last_trial(spec)
    seen = []
    outcome = run_study(spec, workers=2, data_dir=data_dir, threads=1, progress=seen.append)
    assert outcome.result is not None, [p.read_text()[-2000:] for p in outcome.logs]
    assert seen[-1].done == 12 and seen[-1].best_value == outcome.result.best_value
    assert {log.name for log in outcome.logs} == {"worker-0.log", "worker-1.log"}
    assert spec.storage is not None and spec.storage.endswith("study.journal")
    check_finished_study(archive, "lr", spec.storage, 12)
    again = run_study(spec, workers=1, data_dir=data_dir, threads=1)
    assert len(load(spec.storage, "lr").trials) == 12, "a finished study runs nothing more"
    assert again.result is not None


def test_a_killed_worker_s_trial_is_retried_once(tmp_path: Path, data_dir: Path) -> None:
    archive = search_archive(tmp_path / "archive", epochs=4)
    storage = str(tmp_path / "study.journal")
    command = [sys.executable, "-m", "carina", "automl", str(archive), "--trials", "5",
               "--workers", "2", "--storage", storage, "--study", "killed", "--threads", "1"]  # fmt: skip
    env = dict(os.environ, CARINA_DATA_DIR=str(data_dir))
    runner = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        victim = None
        deadline = time.time() + 300
        while victim is None and time.time() < deadline:
            time.sleep(1)
            try:
                running = load(storage, "killed").get_trials(states=(TrialState.RUNNING,))
            except Exception:
                continue
            for trial in running:
                if trial.last_step is not None and trial.last_step >= 1:  # mid-trial
                    victim = trial
                    break
        assert victim is not None, "a trial got going"
        pid = int(str(victim.user_attrs[WORKER]).rpartition(":")[2])
        os.killpg(os.getpgid(pid), signal.SIGKILL)
        output, _ = runner.communicate(timeout=900)
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
    assert runner.returncode == 0, output.decode(errors="replace")[-3000:]
    trials = load(storage, "killed").trials
    assert trials[victim.number].state == TrialState.FAIL
    retries = [t for t in trials if t.user_attrs.get(RETRY_OF) == victim.number]
    assert len(retries) == 1, "retried once"
    assert retries[0].params == victim.params
    assert retries[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 5 and len(trials) == 6, "nothing lost, nothing run twice"
    assert b"best archive" in output


def test_a_stale_heartbeat_counts_as_a_dead_worker(tmp_path: Path) -> None:
    archive = search_archive(tmp_path / "archive")
    spec = StudySpec(archive=archive, study="stale", trials=3)
    study = create_or_resume(spec)
    assert spec.storage is not None
    trial = claim(study)
    assert trial is not None and trial.number == 0
    suggest(trial, Archive.open(archive).search_space())
    assert recover_stale(study, stale_after=60) == [], "a fresh heartbeat is alive"
    trial.set_user_attr(WORKER, "another-machine:4242")
    trial.set_user_attr(HEARTBEAT, time.time() - 3600)
    other = load(spec.storage, "stale")
    assert recover_stale(other, stale_after=60) == [0]
    assert recover_stale(other, stale_after=60) == [], "found once"
    retry = [t for t in other.trials if t.user_attrs.get(RETRY_OF) == 0]
    assert len(retry) == 1 and retry[0].state == TrialState.WAITING
    assert claim(other) is not None and claim(other) is not None  # the two queued trials
    again = claim(other)  # the retry, queued last
    assert again is not None and again.user_attrs[RETRY_OF] == 0
    again.set_user_attr(WORKER, "another-machine:4243")
    again.set_user_attr(HEARTBEAT, time.time() - 3600)
    assert recover_stale(other, stale_after=60) == [again.number]
    assert not [t for t in other.trials if t.user_attrs.get(RETRY_OF) == again.number]
    assert claim(other) is None, "a retry that dies is not retried again"


def test_a_resumed_study_refuses_changed_search_blocks(tmp_path: Path) -> None:
    from carina.automl.study import AutoMLError

    archive = search_archive(tmp_path / "archive")
    spec = StudySpec(archive=archive, study="s", trials=2)
    create_or_resume(spec)
    assert len(create_or_resume(StudySpec(archive=archive, study="s", trials=4)).trials) == 4
    path = archive / "config" / "config_train.json"
    config = json.loads(path.read_text())
    config["search"][0]["targets"] = [1e-4, 1e-1]
    path.write_text(json.dumps(config))
    with pytest.raises(AutoMLError, match=r"search blocks .* changed"):
        create_or_resume(StudySpec(archive=archive, study="s", trials=2))
    other = search_archive(tmp_path / "other")
    with pytest.raises(AutoMLError, match="give another --study"):
        create_or_resume(StudySpec(archive=other, study="s", trials=2, storage=spec.storage))


def test_an_interrupted_study_resumes_with_the_same_command(tmp_path: Path, data_dir: Path) -> None:
    archive = search_archive(tmp_path / "archive", epochs=4)
    spec = StudySpec(archive=archive, study="resume", trials=3, pruner="none")
    late = run_study(spec, workers=1, data_dir=data_dir, threads=1, timeout=0.001)
    assert late.result is None and late.summary.waiting == 3, "past the deadline nothing starts"
    assert spec.storage is not None
    command = [sys.executable, "-m", "carina", "automl", str(archive), "--trials", "3",
               "--study", "resume", "--pruner", "none", "--threads", "1"]  # fmt: skip
    env = dict(os.environ, CARINA_DATA_DIR=str(data_dir))
    runner = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            time.sleep(1)
            running = load(spec.storage, "resume").get_trials(states=(TrialState.RUNNING,))
            if running and running[0].last_step is not None:
                break
        pid = int(str(running[0].user_attrs[WORKER]).rpartition(":")[2])
    finally:  # the whole run dies: the command, its worker, the trial in progress
        os.killpg(runner.pid, signal.SIGKILL)
        runner.wait(30)
    os.killpg(os.getpgid(pid), signal.SIGKILL)
    outcome = run_study(spec, workers=1, data_dir=data_dir, threads=1)
    assert outcome.result is not None
    trials = load(spec.storage, "resume").trials
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 3
    assert [t.state for t in trials].count(TrialState.FAIL) == 1 and len(trials) == 4
    assert trials[-1].user_attrs[RETRY_OF] == running[0].number
