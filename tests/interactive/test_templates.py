"""The DeepGrow and DExtr3D archive templates check, train briefly, validate and predict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from carina.archive import Archive
from carina.archive.scaffold import scaffold_archive
from carina.engine.check import check_archive
from carina.engine.train import TrainOptions, train_archive
from carina.errors import ConfigError, GuidanceError
from carina.interactive.guidance import deepest_point, extreme_points
from carina.interactive.predict import InteractivePredictor
from carina.io import load_volume
from carina.kinds import validate_archive

BRIEF = {"epochs": 1, "iterations_per_epoch": 3, "val_interval": 1}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("datasets")


@pytest.mark.parametrize(
    ("task", "dimensions"), [("deepgrow", 3), ("deepgrow", 2), ("annotation", 3)]
)
def test_interactive_templates_train_validate_and_predict(
    tmp_path: Path, data_dir: Path, task: str, dimensions: int
) -> None:
    root = scaffold_archive(tmp_path / task, task=task, dataset="spine_ct", dimensions=dimensions)
    report = check_archive(root, data_dir=data_dir)
    assert any(f"{task} model" in line for line in report.checked)
    result = train_archive(Archive.open(root, overrides=BRIEF), TrainOptions(data_dir=data_dir))
    assert result.iterations == 3 and (root / "models" / "model.pt").is_file()
    metrics = validate_archive(Archive.open(root), data_dir=data_dir)
    assert set(metrics.per_label) == {"spine_ct:L2", "spine_ct:L3", "spine_ct:L4"}
    predictor = InteractivePredictor.from_archive(Archive.open(root))
    image = load_volume(data_dir / "spine_ct" / "imagesTr" / "spine_ct_heldout.nii.gz")
    truth = load_volume(data_dir / "spine_ct" / "labelsTr" / "spine_ct_heldout.nii.gz").array == 2
    if task == "deepgrow":
        click = deepest_point(truth)
        assert click is not None
        outcome = predictor.deepgrow(image, [click], [], current_point=click)
        if dimensions == 2:
            assert outcome.crop[2] == [click[2], click[2] + 1]
            assert not np.delete(outcome.volume.array, click[2], axis=2).any()
    else:
        outcome = predictor.dextr3d(image, extreme_points(truth))
    assert outcome.volume.shape == image.shape
    np.testing.assert_array_equal(outcome.volume.affine, image.affine)
    assert outcome.volume.array.dtype == np.uint8


def test_bad_guidance_is_a_clear_error(tmp_path: Path, data_dir: Path) -> None:
    root = scaffold_archive(tmp_path / "dextr", task="annotation", dataset="spine_ct")
    train_archive(Archive.open(root, overrides=BRIEF), TrainOptions(data_dir=data_dir))
    predictor = InteractivePredictor.from_archive(Archive.open(root))
    image = load_volume(data_dir / "spine_ct" / "imagesTr" / "spine_ct_heldout.nii.gz")
    with pytest.raises(GuidanceError, match="at least 6 extreme point"):
        predictor.dextr3d(image, [(10, 10, 10)] * 5)
    with pytest.raises(GuidanceError, match=r"extreme point \[80, 10, 10\] is outside the image"):
        predictor.dextr3d(image, [(80, 10, 10)] + [(10, 10, 10)] * 5)


def test_template_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="only DeepGrow has a 2D template"):
        scaffold_archive(tmp_path / "a", task="annotation", dimensions=2)
    with pytest.raises(ConfigError, match="use segmentation, deepgrow or annotation"):
        scaffold_archive(tmp_path / "b", task="classify")
