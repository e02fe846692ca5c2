"""Scoring interactive models on held-out cases, from simulated user input.

Each labelled structure of each validation case is segmented from what a user would give: one
click at its deepest voxel (DeepGrow; a 2D model scores the clicked slice only) or its 6 extreme
points (DExtr3D). The scorers plug into :func:`carina.engine.evaluate.validate_archive`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from carina.archive import Archive
from carina.engine.data import CaseLists
from carina.engine.evaluate import CaseScorer, dice_per_label, label_names
from carina.interactive.guidance import deepest_point, extreme_points
from carina.interactive.predict import InteractivePredictor, InteractiveResult
from carina.io import Volume, load_volume

#: Segments one structure (a boolean mask of the truth) of an image, as a user would ask.
Segment = Callable[[Volume, npt.NDArray[np.bool_]], tuple[InteractiveResult, npt.NDArray[Any]]]


def deepgrow_scorer(archive: Archive, device: str | None) -> CaseScorer:
    """Scores a DeepGrow archive: one click at each structure's deepest voxel."""
    predictor = InteractivePredictor.from_archive(archive, device=device)

    def segment(
        image: Volume, mask: npt.NDArray[np.bool_]
    ) -> tuple[InteractiveResult, npt.NDArray[Any]]:
        point = deepest_point(mask)
        assert point is not None
        result = predictor.deepgrow(image, [point], current_point=point)
        return result, mask if not predictor.is_2d else _slice_only(mask, point[2])

    return _structure_scorer(segment)


def dextr3d_scorer(archive: Archive, device: str | None) -> CaseScorer:
    """Scores a DExtr3D archive: the 6 extreme points of each structure."""
    predictor = InteractivePredictor.from_archive(archive, device=device)

    def segment(
        image: Volume, mask: npt.NDArray[np.bool_]
    ) -> tuple[InteractiveResult, npt.NDArray[Any]]:
        return predictor.dextr3d(image, extreme_points(mask)), mask

    return _structure_scorer(segment)


def _structure_scorer(segment: Segment) -> CaseScorer:
    """A scorer that segments every labelled structure of a case: ``dataset:name`` -> Dice."""

    def score(case: dict[str, Any], cases: CaseLists) -> dict[str, float]:
        image = load_volume(case["image"])
        truth = np.asarray(load_volume(case["label"]).array)
        dataset = Path(case["image"]).name.rsplit("_", 1)[0]
        names = label_names(case, cases)
        row = {}
        for value in sorted(int(v) for v in np.unique(truth) if v > 0):
            result, expected = segment(image, truth == value)
            score = dice_per_label(result.volume.array, expected.astype(np.uint8), [1])[1]
            row[f"{dataset}:{names.get(value, str(value))}"] = score
        return row

    return score


def _slice_only(mask: npt.NDArray[Any], k: int) -> npt.NDArray[Any]:
    out = np.zeros_like(mask)
    out[:, :, k] = mask[:, :, k]
    return out
