"""Acceptance of the interactive zoo archives on the held-out halves, which training never saw.

A test is skipped, with the reason shown, while its archive is not in the zoo.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from carina.archive import Archive
from carina.interactive.guidance import corrective_click, deepest_point, extreme_points
from carina.interactive.predict import InteractivePredictor
from carina.zoo import load_index
from tests.zoo.conftest import dice, heldout

SHIPPED = set(load_index())


def shipped(name: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(name not in SHIPPED, reason=f"{name} is not in the zoo yet")


#: Vertebra label values of the held-out halves (discs excluded).
VERTEBRAE = {"spine_ct": (1, 2, 3), "spine_mr": (1, 2, 3)}


def predictor(workspace: Path, name: str) -> InteractivePredictor:
    return InteractivePredictor.from_archive(Archive.open(workspace / "models" / name))


@shipped("deepgrow_3d")
@pytest.mark.parametrize("dataset", ["spine_ct", "spine_mr"])
def test_deepgrow_one_click_then_corrections(workspace: Path, data_dir: Path, dataset: str) -> None:
    deepgrow = predictor(workspace, "deepgrow_3d")
    image, labels = heldout(data_dir, dataset)
    rng = np.random.default_rng(0)
    rounds: list[list[float]] = [[] for _ in range(4)]
    for value in VERTEBRAE[dataset]:
        truth = labels == value
        click = deepest_point(truth)
        assert click is not None
        foreground, background = [click], []
        for round_ in range(4):
            mask = deepgrow.deepgrow(image, foreground, background).volume.array > 0
            rounds[round_].append(dice(mask, truth))
            correction = corrective_click(truth, mask, rng)
            if correction is not None:
                (foreground if correction.foreground else background).append(correction.point)
        assert rounds[0][-1] >= 0.75, (
            f"{dataset} label {value}: one click gives {rounds[0][-1]:.3f}"
        )
    means = [float(np.mean(r)) for r in rounds]
    assert all(later >= earlier - 1e-9 for earlier, later in itertools.pairwise(means)), means


@shipped("annotation_dextr3d")
@pytest.mark.parametrize(
    ("dataset", "value"),
    [(dataset, value) for dataset, values in VERTEBRAE.items() for value in values],
)
def test_dextr3d_from_the_six_extreme_points(
    workspace: Path, data_dir: Path, dataset: str, value: int
) -> None:
    dextr3d = predictor(workspace, "annotation_dextr3d")
    image, labels = heldout(data_dir, dataset)
    truth = labels == value
    mask = dextr3d.dextr3d(image, extreme_points(truth)).volume.array > 0
    assert dice(mask, truth) >= 0.85, f"{dataset} label {value}: {dice(mask, truth):.3f}"
