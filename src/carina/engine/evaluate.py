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
from carina.archive.schema import ModelType
from carina.engine.data import CaseLists, resolve_cases
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


def _segmentation_rows(
    predictor: Predictor, cases: CaseLists, *, progress: Callable[[str], None] | None
) -> list[dict[str, Any]]:
    names = predictor.settings.labels
    values = list(range(1, len(names) + 1))
    rows = []
    for case in cases.val:
        prediction = predictor.predict(case["image"]).volume.array
        truth = np.asarray(load_volume(case["label"]).array)
        scores = dice_per_label(prediction, truth, values)
        row: dict[str, Any] = {"case": Path(case["image"]).name}
        row.update({names[v - 1]: scores[v] for v in values})
        rows.append(_with_mean(row, list(scores.values()), progress))
    return rows


def _interactive_rows(
    archive: Archive,
    cases: CaseLists,
    *,
    device: str | None,
    progress: Callable[[str], None] | None,
) -> list[dict[str, Any]]:
    """Each structure of each validation case, segmented from simulated user input: one click at
    its deepest voxel (DeepGrow) or its 6 extreme points (DExtr3D)."""
    from carina.interactive.guidance import deepest_point, extreme_points
    from carina.interactive.predict import InteractivePredictor

    predictor = InteractivePredictor.from_archive(archive, device=device)
    rows = []
    for case in cases.val:
        image = load_volume(case["image"])
        truth = np.asarray(load_volume(case["label"]).array)
        dataset = Path(case["image"]).name.rsplit("_", 1)[0]
        names = _label_names(case, cases)
        row: dict[str, Any] = {"case": Path(case["image"]).name}
        scores = []
        for value in sorted(int(v) for v in np.unique(truth) if v > 0):
            mask = truth == value
            if predictor.settings.type == ModelType.DEEPGROW:
                point = deepest_point(mask)
                assert point is not None
                result = predictor.deepgrow(image, [point], current_point=point)
                mask = mask if not predictor.is_2d else _slice_only(mask, point[2])
            else:
                result = predictor.dextr3d(image, extreme_points(mask))
            score = dice_per_label(result.volume.array, mask.astype(np.uint8), [1])[1]
            row[f"{dataset}:{names.get(value, str(value))}"] = score
            scores.append(score)
        rows.append(_with_mean(row, scores, progress))
    return rows


def _label_names(case: dict[str, Any], cases: CaseLists) -> dict[int, str]:
    from carina.archive.schema import read_json

    if cases.labels is not None:
        return cases.labels
    manifest = Path(case["label"]).parent.parent / "dataset.json"
    document = read_json(manifest) if manifest.is_file() else {}
    labels = document.get("labels") if isinstance(document, dict) else None
    return {int(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


def _slice_only(mask: npt.NDArray[Any], k: int) -> npt.NDArray[Any]:
    out = np.zeros_like(mask)
    out[:, :, k] = mask[:, :, k]
    return out


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
    if settings.task in (ModelType.DEEPGROW, ModelType.ANNOTATION):
        rows = _interactive_rows(archive, cases, device=device, progress=progress)
    else:
        predictor = Predictor.from_archive(archive, device=device)
        if validation.inferer is not None:
            file = archive.layout.validation_config.name
            predictor.inferer = _instantiate(validation.inferer, file)
        rows = _segmentation_rows(predictor, cases, progress=progress)
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
    layout = archive.layout
    layout.eval_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(layout.metrics, (json.dumps(metrics, indent=2) + "\n").encode())
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=["case", *names, "mean_dice"], restval="")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(layout.per_case_metrics, text.getvalue().encode())
    return ValidationResult(mean, per_label, rows, layout.metrics)
