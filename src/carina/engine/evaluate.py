"""``carina validate``: the archive's serving pipeline on the validation cases, Dice per label."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from carina import __version__
from carina.archive import Archive
from carina.engine.data import resolve_cases
from carina.engine.predict import Predictor
from carina.environment import package_version
from carina.io import load_volume
from carina.io.atomic import atomic_write_bytes


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


def _instantiate(component: dict[str, Any], file: str) -> Any:
    from carina.archive import ResolvedConfig

    return ResolvedConfig(file, {"inferer": component}).instantiate("inferer")


def validate_archive(
    archive: Archive,
    *,
    dataset: Path | None = None,
    data_dir: Path,
    device: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> ValidationResult:
    """Segment every validation case, write ``eval/metrics.json`` and the per-case CSV.

    Raises:
        ConfigError, ArchiveError, ImageReadError: a config, weights or data problem.
    """
    settings = archive.train_config().settings
    validation = archive.validation_config()
    split = validation.split or settings.dataset.val_key
    dataset_settings = settings.dataset.model_copy(update={"val_key": split})
    cases = resolve_cases(archive, dataset_settings, override=dataset, data_dir=data_dir)
    predictor = Predictor.from_archive(archive, device=device)
    if validation.inferer is not None:
        predictor.inferer = _instantiate(validation.inferer, archive.layout.validation_config.name)
    names = predictor.settings.labels
    values = list(range(1, len(names) + 1))
    rows = []
    for case in cases.val:
        prediction = predictor.predict(case["image"]).volume.array
        truth = np.asarray(load_volume(case["label"]).array)
        scores = dice_per_label(prediction, truth, values)
        row: dict[str, Any] = {"case": Path(case["image"]).name}
        row.update({names[v - 1]: scores[v] for v in values})
        row["mean_dice"] = float(np.nanmean(list(scores.values())))
        rows.append(row)
        if progress:
            progress(f"{row['case']}: mean Dice {row['mean_dice']:.3f}")
    per_label = {name: float(np.nanmean([row[name] for row in rows])) for name in names}
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
    layout = archive.layout
    layout.eval_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(layout.metrics, (json.dumps(metrics, indent=2) + "\n").encode())
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=["case", *names, "mean_dice"])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(layout.per_case_metrics, text.getvalue().encode())
    return ValidationResult(mean, per_label, rows, layout.metrics)
