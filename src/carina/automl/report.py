"""The results of a finished study: the best trial as a new archive, a CSV of every trial, plots.

Everything goes under ``<archive>/automl/<study>/``: ``best/`` (the best trial's configs and
weights, an archive that trains, validates and serves like any other), ``trials.csv`` (one row per
trial: state, value, parameters, times, why it failed or what it retried), ``history.png``
(optimisation history) and ``importance.png`` (parameter importances, when at least two trials
completed and a parameter varied), and ``summary.json``.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from carina.automl.study import FIRST, RETRY_OF, study_dir, trial_folder

log = logging.getLogger(__name__)


@dataclass
class StudyResult:
    """Where the results went, and the figures."""

    best: Path
    best_trial: int
    best_value: float
    first_value: float | None
    csv: Path
    plots: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def write_results(study: optuna.Study) -> StudyResult:
    """Write ``best/``, ``trials.csv``, plots and ``summary.json`` for a study.

    Raises:
        ValueError: no trial completed.
    """
    archive = Path(study.user_attrs["archive"])
    folder = study_dir(archive, study.study_name)
    folder.mkdir(parents=True, exist_ok=True)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise ValueError(f"study {study.study_name!r}: no trial completed")
    best = study.best_trial
    target = folder / "best"
    staging = folder / "best.partial"
    shutil.rmtree(staging, ignore_errors=True)
    source = trial_folder(folder, best.number)
    shutil.copytree(source / "config", staging / "config")
    shutil.copytree(source / "models", staging / "models", ignore=_only_weights)
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    first = next((t for t in study.trials if t.user_attrs.get(FIRST)), None)
    result = StudyResult(
        best=target,
        best_trial=best.number,
        best_value=float(best.value or 0.0),
        first_value=float(first.value) if first is not None and first.value is not None else None,
        csv=write_csv(study, folder / "trials.csv"),
    )
    result.plots, result.notes = write_plots(study, folder)
    summary = {
        "study": study.study_name,
        "archive": str(archive),
        "best_trial": best.number,
        "best_value": result.best_value,
        "best_params": best.params,
        "first_value": result.first_value,
        "trials": _counts(study),
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return result


def _only_weights(folder: str, names: list[str]) -> list[str]:
    return [name for name in names if name != "model.pt"]


def _counts(study: optuna.Study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name.lower()] = counts.get(trial.state.name.lower(), 0) + 1
    return counts


def write_csv(study: optuna.Study, path: Path) -> Path:
    """One row per trial, in trial order."""
    trials = study.get_trials(deepcopy=False)
    names = sorted({name for trial in trials for name in trial.params})
    columns = ["number", "state", "value", *names, "epochs", "train_seconds", "trial_seconds",
               "pruned_at_epoch", "retry_of", "worker", "error"]  # fmt: skip
    partial = path.with_suffix(".csv.partial")
    with partial.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for trial in trials:
            attrs = trial.user_attrs
            pruned_at = trial.last_step if trial.state == TrialState.PRUNED else None
            row: list[Any] = [trial.number, trial.state.name, trial.value]
            row += [trial.params.get(name) for name in names]
            row += [attrs.get("epochs"), attrs.get("train_seconds"), attrs.get("trial_seconds")]
            row += [pruned_at, attrs.get(RETRY_OF), attrs.get("carina_worker"), attrs.get("error")]
            writer.writerow(["" if value is None else value for value in row])
    partial.replace(path)
    return path


def write_plots(study: optuna.Study, folder: Path) -> tuple[list[Path], list[str]]:
    """``history.png`` and ``importance.png``; a plot that cannot be drawn becomes a note."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    written: list[Path] = []
    notes: list[str] = []
    for name, draw in (
        ("history.png", plots.plot_optimization_history),
        ("importance.png", plots.plot_param_importances),
    ):
        try:
            with warnings.catch_warnings():  # Optuna marks its matplotlib plots experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                axes = draw(study)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            notes.append(f"{name}: not drawn ({exc})")
            continue
        figure = axes.get_figure(root=True)
        assert figure is not None
        figure.set_size_inches(8, 5)
        figure.tight_layout()
        figure.savefig(folder / name, dpi=100)
        plt.close(figure)
        written.append(folder / name)
    return written, notes
