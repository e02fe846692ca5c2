"""Training, validation and inference of the spine CT example archive on the real shipped data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from carina.archive import Archive
from carina.engine.predict import Predictor
from carina.engine.train import TrainOptions, TrainResult, train_archive
from carina.io import load_volume
from carina.kinds import validate_archive
from tests.archive.conftest import copy_example


def test_short_training_learns_the_vertebrae(trained: tuple[Path, TrainResult]) -> None:
    root, result = trained
    assert result.iterations == 300
    assert result.best_metric > 0.6, f"held-out mean Dice {result.best_metric:.3f}"
    state = torch.load(root / "models" / "model.pt", weights_only=True)
    assert "model.0.conv.unit0.conv.weight" in state
    last = torch.load(root / "models" / "checkpoint_last.pt", weights_only=True)
    assert set(last) >= {"network", "optimizer", "trainer", "lr_scheduler", "best"}
    assert last["trainer"]["iteration"] == 300
    assert any((root / "logs").iterdir()), "TensorBoard events are written"


def test_validate_writes_metrics_that_match_training(
    trained: tuple[Path, TrainResult], data_dir: Path
) -> None:
    root, result = trained
    validation = validate_archive(Archive.open(root), data_dir=data_dir)
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    assert metrics["mean_dice"] == pytest.approx(result.best_metric, abs=0.01)
    assert set(metrics["per_label"]) == {"L2", "L3", "L4"}
    assert metrics["split"] == "validation" and metrics["dataset"] == "spine_ct"
    assert metrics["torch_version"] and metrics["monai_version"] and metrics["seed"] == 0
    csv = (root / "eval" / "metrics_per_case.csv").read_text().splitlines()
    assert csv[0] == "case,L2,L3,L4,mean_dice" and csv[1].startswith("spine_ct_heldout.nii.gz,")
    assert validation.mean_dice == pytest.approx(metrics["mean_dice"], abs=1e-6)


def test_infer_keeps_the_input_geometry(
    trained: tuple[Path, TrainResult], ct_series: Path, tmp_path: Path
) -> None:
    root, _ = trained
    predictor = Predictor.from_archive(Archive.open(root), batch=True)
    prediction = predictor.predict_to_file(ct_series, tmp_path / "seg.nrrd")
    source = load_volume(ct_series)
    written = load_volume(tmp_path / "seg.nrrd")
    assert written.shape == source.shape
    np.testing.assert_allclose(written.affine, source.affine, atol=1e-6)
    assert set(np.unique(written.array)) <= {0, 1, 2, 3} and written.array.max() > 0
    assert set(prediction.timings) == {"read", "pre", "infer", "post", "write"}


def test_resume_continues_from_the_last_epoch(tmp_path: Path, data_dir: Path) -> None:
    root = copy_example("spine_ct_vertebrae", tmp_path / "spine")
    short = {"epochs": 1, "iterations_per_epoch": 5, "val_interval": 1}
    first = train_archive(Archive.open(root, overrides=short), TrainOptions(data_dir=data_dir))
    assert first.epochs == 1
    more = {**short, "epochs": 3}
    resumed = train_archive(
        Archive.open(root, overrides=more), TrainOptions(data_dir=data_dir, resume=True)
    )
    assert (resumed.epochs, resumed.iterations) == (3, 15)
    assert resumed.best_metric >= first.best_metric


@pytest.mark.integration
def test_killed_training_leaves_a_checkpoint_that_resumes(tmp_path: Path, data_dir: Path) -> None:
    root = copy_example("spine_ct_vertebrae", tmp_path / "spine")
    environment = {**os.environ, "CARINA_DATA_DIR": str(data_dir)}
    command = [sys.executable, "-m", "carina", "train", str(root)]
    command += [
        "--set",
        "iterations_per_epoch=4",
        "--set",
        "val_interval=50",
        "--set",
        "epochs=1000",
    ]
    process = subprocess.Popen(
        command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    checkpoint = root / "models" / "checkpoint_last.pt"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not checkpoint.exists():
            time.sleep(0.2)
        assert checkpoint.exists(), "no checkpoint written"
        time.sleep(1.5)  # let it overwrite the checkpoint a few times, then kill it mid-run
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    state = torch.load(checkpoint, weights_only=True)
    epoch = state["trainer"]["iteration"] // 4
    assert epoch >= 1
    leftovers = [p.name for p in checkpoint.parent.iterdir() if p.name.startswith(".")]
    assert all(".tmp" in name for name in leftovers)
    resumed = train_archive(
        Archive.open(
            root, overrides={"epochs": epoch + 1, "iterations_per_epoch": 4, "val_interval": 50}
        ),
        TrainOptions(data_dir=data_dir, resume=True),
    )
    assert resumed.epochs == epoch + 1


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path: Path, data_dir: Path) -> None:
    from carina.errors import ArchiveError

    root = copy_example("spine_ct_vertebrae", tmp_path / "spine")
    with pytest.raises(ArchiveError, match="nothing to resume from"):
        train_archive(Archive.open(root), TrainOptions(data_dir=data_dir, resume=True))


@pytest.mark.slow
def test_full_training_reaches_the_target_dice(tmp_path: Path, data_dir: Path) -> None:
    root = copy_example("spine_ct_vertebrae", tmp_path / "spine")
    result = train_archive(Archive.open(root), TrainOptions(data_dir=data_dir))
    assert result.iterations == 1200  # about 2 minutes on 2 cores: benchmarks/train.py
    metrics = validate_archive(Archive.open(root), data_dir=data_dir)
    assert metrics.mean_dice >= 0.80, metrics.per_label
