"""``carina validate``: an archive scored on its validation cases, Dice per label or structure.

How a case is scored depends on the model's kind: a segmentation archive runs its serving pipeline
(:func:`segmentation_scorer`); interactive kinds bring their own scorer (simulated clicks or extreme
points, :mod:`carina.interactive.evaluate`). The kinds table (:mod:`carina.kinds`) picks it.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from carina import __version__
from carina.archive import Archive
from carina.archive.schema import read_json
from carina.engine.data import CaseLists, resolve_cases
from carina.engine.predict import Predictor
from carina.environment import package_version
from carina.files import atomic_write_bytes
from carina.io import load_volume


@dataclass
class ValidationResult:
    """Mean and per-label Dice over the validation cases, and the per-case rows."""

    mean_dice: float
    per_label: dict[str, float]
    cases: list[dict[str, Any]]
    metrics_path: Path


def dice_per_label(
    prediction: npt.NDArray[Any], truth: npt.NDArray[Any], labels: list[int]
) -> dict[int, float]:
    """Dice of each label value; NaN where the label is absent from both."""
    scores = {}
    for value in labels:
        predicted, actual = prediction == value, truth == value
        total = int(predicted.sum()) + int(actual.sum())
        scores[value] = (
            2.0 * int(np.logical_and(predicted, actual).sum()) / total if total else math.nan
        )
    return scores


class CaseScorer(Protocol):
    """Scores one validation case: Dice per column (a label, or a structure of a dataset)."""

    def __call__(self, case: dict[str, Any], cases: CaseLists) -> dict[str, float]: ...


#: Builds the scorer of an archive on a device; each model kind has one.
ScorerFactory = Callable[[Archive, str | None], CaseScorer]


def segmentation_scorer(archive: Archive, device: str | None) -> CaseScorer:
    """Scores a segmentation archive: its serving pipeline (with the validation config's inferer,
    when it names one) on each case, Dice per label name.

    Raises:
        ConfigError, ArchiveError: the pipeline or the weights cannot be loaded.
    """
    predictor = Predictor.from_archive(archive, device=device)
    inferer = archive.validation_config().inferer
    if inferer is not None:
        predictor.inferer = _instantiate(inferer, archive.layout.validation_config.name)
    names = predictor.settings.labels
    values = list(range(1, len(names) + 1))

    def score(case: dict[str, Any], cases: CaseLists) -> dict[str, float]:
        prediction = predictor.predict(case["image"]).volume.array
        truth = np.asarray(load_volume(case["label"]).array)
        scores = dice_per_label(prediction, truth, values)
        return {names[v - 1]: scores[v] for v in values}

    return score


def label_names(case: dict[str, Any], cases: CaseLists) -> dict[int, str]:
    """Label value -> name of a case: the datalist's labels, else its dataset.json's."""
    if cases.labels is not None:
        return cases.labels
    manifest = Path(case["label"]).parent.parent / "dataset.json"
    document = read_json(manifest) if manifest.is_file() else {}
    labels = document.get("labels") if isinstance(document, dict) else None
    return {int(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


def _with_mean(
    row: dict[str, Any], scores: list[float], progress: Callable[[str], None] | None
) -> dict[str, Any]:
    row["mean_dice"] = float(np.nanmean(scores)) if scores else math.nan
    if progress:
        progress(f"{row['case']}: mean Dice {row['mean_dice']:.3f}")
    return row


def _instantiate(component: dict[str, Any], file: str) -> Any:
    from carina.archive import ResolvedConfig

    return ResolvedConfig(file, {"inferer": component}).instantiate("inferer")


def validate_archive(
    archive: Archive,
    *,
    scorer: ScorerFactory,
    dataset: Path | None = None,
    data_dir: Path,
    device: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> ValidationResult:
    """Score every validation case, write ``eval/metrics.json`` and the per-case CSV.

    Args:
        archive: the trained archive.
        scorer: builds the case scorer of the archive's kind (see :mod:`carina.kinds`).
        dataset: a dataset folder or datalist instead of the archive's.
        data_dir: where shipped datasets are exported on first use.
        device: where the network runs (None: CUDA when present).
        progress: called with a line per case.

    Raises:
        ConfigError, ArchiveError, ImageReadError: a config, weights or data problem.
    """
    settings = archive.train_config().settings
    split = archive.validation_config().split or settings.dataset.val_key
    dataset_settings = settings.dataset.model_copy(update={"val_key": split})
    cases = resolve_cases(
        archive, dataset_settings, override=dataset, data_dir=data_dir, trained=True
    )
    for note in cases.notes:
        if progress is not None:
            progress(f"note: {note}")
    score = scorer(archive, device)
    rows = []
    for case in cases.val:
        row: dict[str, Any] = {"case": Path(case["image"]).name, **score(case, cases)}
        rows.append(_with_mean(row, [v for k, v in row.items() if k != "case"], progress))
    names = list(
        dict.fromkeys(key for row in rows for key in row if key not in ("case", "mean_dice"))
    )
    per_label = {
        name: float(np.nanmean([row[name] for row in rows if name in row])) for name in names
    }
    mean = float(np.nanmean(list(per_label.values())))
    metrics = {
        "mean_dice": round(mean, 6),
        "per_label": {name: round(score, 6) for name, score in per_label.items()},
        "split": split,
        "dataset": cases.name or cases.datalist.parent.name,
        "cases": len(rows),
        "carina_version": __version__,
        "torch_version": package_version("torch"),
        "monai_version": package_version("monai"),
        "seed": settings.seed,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    _write_metrics(archive, metrics, rows, names)
    return ValidationResult(mean, per_label, rows, archive.layout.metrics)


def _write_metrics(
    archive: Archive, metrics: dict[str, Any], rows: list[dict[str, Any]], names: list[str]
) -> None:
    layout = archive.layout
    layout.eval_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(layout.metrics, (json.dumps(metrics, indent=2) + "\n").encode())
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=["case", *names, "mean_dice"], restval="")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(layout.per_case_metrics, text.getvalue().encode())
