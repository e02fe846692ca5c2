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
