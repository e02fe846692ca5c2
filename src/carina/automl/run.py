"""``carina automl``: create or resume a study, run local workers on it, write the results.

Each worker is a separate process (``carina automl worker``) in its own process group, with an
equal share of the CPU threads; the coordinator shows progress from the storage and, when the
workers are done (or on timeout or Ctrl-C), stops what is left by process group. A stopped study
resumes with the same command: trials that were running are found dead and queued again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from carina.automl.report import StudyResult, write_results
from carina.automl.study import StudySpec, Summary, create_or_resume, study_dir, summarize


@dataclass
class RunOutcome:
    """The study's state when the command ends, and its results when it finished."""

    summary: Summary
    result: StudyResult | None
    logs: list[Path]


def run_study(
    spec: StudySpec,
    *,
    workers: int,
    data_dir: Path,
    timeout: float | None = None,
    threads: int | None = None,
    device: str | None = None,
    progress: Callable[[Summary], None] | None = None,
) -> RunOutcome:
    """Run ``spec`` with ``workers`` local worker processes (module docstring)."""
    study = create_or_resume(spec)
    folder = study_dir(spec.archive, spec.study)
    folder.mkdir(parents=True, exist_ok=True)
    per_worker = threads or max(1, (os.cpu_count() or 1) // workers)
    deadline = time.time() + timeout if timeout else None
    assert spec.storage is not None
    command = [
        sys.executable, "-m", "carina", "automl", "worker", "--study", spec.study,
        "--storage", spec.storage, "--archive", str(spec.archive), "--data-dir", str(data_dir),
    ]  # fmt: skip
    if deadline is not None:
        command += ["--deadline", str(deadline)]
    if device:
        command += ["--device", device]
    env = dict(os.environ, OMP_NUM_THREADS=str(per_worker), MKL_NUM_THREADS=str(per_worker))
    logs = [folder / f"worker-{index}.log" for index in range(workers)]
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for path in logs:
            with path.open("ab") as log:
                processes.append(
                    subprocess.Popen(
                        command,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=env,
                        start_new_session=True,
                    )
                )
        while any(process.poll() is None for process in processes):
            if progress is not None:
                progress(summarize(study))
            if deadline is not None and time.time() > deadline + 3600:
                break  # running trials were given an hour to finish after the deadline
            time.sleep(2.0)
    finally:
        _stop(processes)
    summary = summarize(study)
    if progress is not None:
        progress(summary)
    finished = summary.waiting == 0 and summary.running == 0 and summary.complete > 0
    return RunOutcome(summary, write_results(study) if finished else None, logs)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """Stop every worker's process group: TERM, then KILL after 10 s."""
    for process in processes:
        if process.poll() is None:
            _signal(process, signal.SIGTERM)
    deadline = time.time() + 10
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            _signal(process, signal.SIGKILL)
            process.wait(timeout=10)


def _signal(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
