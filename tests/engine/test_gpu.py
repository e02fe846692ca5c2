"""On CUDA: training with mixed precision, and inference agreeing with the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from carina.archive import Archive
from carina.engine.predict import Predictor
from carina.engine.train import TrainOptions, train_archive
from tests.archive.conftest import copy_example

pytestmark = pytest.mark.gpu


def test_cuda_training_uses_amp_and_learns(tmp_path: Path, data_dir: Path) -> None:
    root = copy_example("spine_ct_vertebrae", tmp_path / "spine")
    result = train_archive(
        Archive.open(root, overrides={"epochs": 3, "val_interval": 3}),
        TrainOptions(data_dir=data_dir, device="cuda"),
    )
    assert result.device.startswith("cuda") and result.amp
    assert result.best_metric > 0.6
    heldout = data_dir / "spine_ct" / "imagesTr" / "spine_ct_heldout.nii.gz"
    on_gpu = Predictor.from_archive(Archive.open(root), device="cuda").predict(heldout)
    on_cpu = Predictor.from_archive(Archive.open(root), device="cpu").predict(heldout)
    assert (on_gpu.volume.array != on_cpu.volume.array).mean() < 0.005


@pytest.mark.parametrize("model", ["spine_ct_vertebrae", "brain_mr_tissue"])
def test_cuda_chosen_with_amp_and_planned_run_agrees(model: str, data_dir: Path) -> None:
    """What point 1 checks on the CPU, on CUDA: chosen without being asked, in fp16 autocast, the
    planned run agrees with the archive's configured sliding window (per-label Dice >= 0.99) and
    with the CPU's labels."""
    from carina.data import get_dataset
    from carina.zoo.install import zoo_archive_path
    from tests.engine.test_plan import dice_per_label

    archive = Archive.open(zoo_archive_path(model))
    planned = Predictor.from_archive(archive, plan="auto")
    assert planned.device.type == "cuda" and planned.precision == "fp16"
    exact = Predictor.from_archive(archive, plan="archive")
    on_cpu = Predictor.from_archive(archive, device="cpu", plan="archive")
    for name in ("spine_ct", "spine_mr", "brain_mr"):
        image = get_dataset(name).build().image
        ours = planned.predict(image).volume.array
        for reference in (exact.predict(image).volume.array, on_cpu.predict(image).volume.array):
            scores = dice_per_label(ours, reference)
            assert all(score >= 0.99 for score in scores.values()), (model, name, scores)
