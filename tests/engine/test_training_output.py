"""What ``carina train`` prints when its output is a log (not a terminal), and what TensorBoard gets.

One short run of the brain archive through the CLI, as CI or ``| tee`` sees it: fine-tuned from
fresh spine weights (a new output layer: some tensors skipped), a layer frozen, and a MONAI
transform that warns (``Orientationd``'s announced new default), as Model Zoo bundles do.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from carina.archive import Archive
from carina.engine.network import build_network
from tests.archive.conftest import copy_example

IGNORED = shutil.ignore_patterns("models", "logs", ".cache")


@pytest.fixture(scope="module")
def warning_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The brain archive with a validation transform that raises MONAI's FutureWarning."""
    root = copy_example("brain_mr_tissue", tmp_path_factory.mktemp("output") / "brain")
    path = root / "config" / "config_train.json"
    config = json.loads(path.read_text())
    orientation = {"_target_": "Orientationd", "keys": ["image", "label"], "axcodes": "RAS"}
    config["val_preprocessing"].insert(2, orientation)
    path.write_text(json.dumps(config))
    return root


def carina(arguments: list[str], data_dir: Path) -> subprocess.CompletedProcess[str]:
    """``python -m carina ARGUMENTS`` with its output captured (so not a terminal)."""
    environment = {**os.environ, "CARINA_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "2"}
    return subprocess.run(
        [sys.executable, "-m", "carina", *arguments],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def run(
    warning_archive: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> subprocess.CompletedProcess[str]:
    """``carina train`` for 2 epochs, validating every 5 (so only the last epoch validates)."""
    spine = Archive.open(
        copy_example("spine_ct_vertebrae", tmp_path_factory.mktemp("spine") / "spine")
    )
    weights = tmp_path_factory.mktemp("weights") / "spine.pt"
    torch.save(build_network(spine.train_config().resolved).state_dict(), weights)
    arguments = ["train", str(warning_archive), "--pretrained", str(weights)]
    arguments += ["--freeze", "model.0.*", "--freeze-epochs", "1", "--device", "cpu"]
    arguments += ["--set", "epochs=2", "--set", "iterations_per_epoch=2", "--set", "val_interval=5"]
    process = carina(arguments, data_dir)
    assert process.returncode == 0, process.stderr[-3000:]
    return process


def test_a_log_gets_one_line_per_epoch(run: subprocess.CompletedProcess[str]) -> None:
    epochs = [line for line in run.stderr.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 2, run.stderr
    first, last = epochs
    assert first.startswith("epoch 1/2: loss ") and "val Dice" not in first
    assert ", lr 0.01, elapsed 0:00:" in first and ", ETA " in first
    assert last.startswith("epoch 2/2: loss ") and last.endswith("ETA 0:00:00")
    assert "val Dice grey matter 0." in last and ", white matter 0." in last and "(mean 0." in last
    assert "━" not in run.stderr, "no progress bar in a log"


def test_the_transfer_report_comes_before_training_and_once(
    run: subprocess.CompletedProcess[str],
) -> None:
    lines = run.stderr.splitlines()
    loaded = next(i for i, line in enumerate(lines) if line.startswith("pretrained weights from"))
    frozen = next(i for i, line in enumerate(lines) if line.startswith("frozen until epoch 1"))
    first_epoch = next(i for i, line in enumerate(lines) if line.startswith("epoch 1/2"))
    assert loaded < frozen < first_epoch
    assert any(line.startswith("skipped, shape differs") for line in lines[loaded:first_epoch])
    assert "pretrained weights" not in run.stdout and "frozen" not in run.stdout
    summary = run.stdout.strip().splitlines()
    assert len(summary) == 1 and summary[0].startswith("trained 2 epochs (4 steps); ")
    assert "best validation mean Dice 0." in summary[0] and " at epoch 2;" in summary[0]


def test_third_party_warnings_and_logs_stay_out(run: subprocess.CompletedProcess[str]) -> None:
    assert "Warning" not in run.stderr, run.stderr
    assert "Engine run" not in run.stderr


def test_verbose_shows_third_party_warnings_and_logs(
    warning_archive: Path, data_dir: Path, tmp_path: Path
) -> None:
    archive = shutil.copytree(warning_archive, tmp_path / "brain", ignore=IGNORED)
    arguments = ["-v", "train", str(archive), "--device", "cpu"]
    arguments += ["--set", "epochs=1", "--set", "iterations_per_epoch=1"]
    process = carina(arguments, data_dir)
    assert process.returncode == 0, process.stderr[-3000:]
    assert "FutureWarning" in process.stderr and "Orientationd" in process.stderr
    assert "Engine run" in process.stderr, "ignite's INFO lines"


def test_tensorboard_has_the_dice_per_label_and_the_learning_rate(
    run: subprocess.CompletedProcess[str], warning_archive: Path
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, list[tuple[int, float]]] = {}
    for events in (warning_archive / "logs").iterdir():
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars[tag] = [(e.step, e.value) for e in accumulator.Scalars(tag)]
    assert {"val/dice/grey matter", "val/dice/white matter", "val_mean_dice"} <= set(scalars)
    grey, white = scalars["val/dice/grey matter"], scalars["val/dice/white matter"]
    assert [step for step, _ in grey] == [2] and [step for step, _ in white] == [2]
    assert scalars["val_mean_dice"][0][1] == pytest.approx((grey[0][1] + white[0][1]) / 2)
    learning_rates = scalars["train/lr"]
    assert [step for step, _ in learning_rates] == [1, 2]
    assert learning_rates[0][1] == pytest.approx(0.01), "the rate epoch 1 trained with"
    assert learning_rates[1][1] < 0.01, "the schedule lowered it"
    assert "train_loss" in scalars


def test_a_config_error_under_nproc_is_one_line(tmp_path: Path, data_dir: Path) -> None:
    archive = copy_example("spine_ct_vertebrae", tmp_path / "spine")
    missing = tmp_path / "missing.json"
    process = carina(["train", str(archive), "--nproc", "2", "--dataset", str(missing)], data_dir)
    assert process.returncode == 1
    assert process.stderr.count("error:") == 1, process.stderr
    assert "missing.json" in process.stderr and "Traceback" not in process.stderr
