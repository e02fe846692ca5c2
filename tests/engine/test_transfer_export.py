"""Transfer learning between archives, and TorchScript/ONNX exports checked against PyTorch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from carina.archive import Archive
from carina.engine.export import ExportFormat, export_archive
from carina.engine.predict import Predictor
from carina.engine.train import TrainOptions, TrainResult, train_archive
from carina.io import load_volume
from tests.archive.conftest import copy_example

OUTPUT_LAYER = "model.2.1.conv.unit0.conv.weight"


def test_brain_archive_fine_tunes_from_the_spine_archive(
    trained: tuple[Path, TrainResult], tmp_path: Path, data_dir: Path
) -> None:
    spine, _ = trained
    brain = copy_example("brain_mr_tissue", tmp_path / "brain")
    overrides = {"epochs": 1, "iterations_per_epoch": 4}
    result = train_archive(
        Archive.open(brain, overrides=overrides),
        TrainOptions(data_dir=data_dir, pretrained=spine, freeze=["model.0.*"], freeze_epochs=1),
    )
    report = result.transfer
    assert report is not None
    reshaped = {name: (old, new) for name, old, new in report.reshaped}
    assert any(name.startswith("model.2.") for name in reshaped), report.lines()
    old, new = next(shape for name, shape in reshaped.items() if name.startswith("model.2."))
    assert (old[0] == 4 and new[0] == 3) or (old[1] == 4 and new[1] == 3)
    assert len(report.loaded) > 10 and not report.skipped
    assert any("skipped, shape differs" in line for line in report.lines())
    pretrained = torch.load(spine / "models" / "model.pt", weights_only=True)
    tuned = result.network.state_dict()
    frozen = [name for name in result.frozen if name in pretrained]
    assert frozen and all(torch.equal(tuned[name], pretrained[name]) for name in frozen)
    assert (brain / "models" / "model.pt").is_file()


@pytest.mark.parametrize("export_format", list(ExportFormat))
def test_exports_match_pytorch(
    trained: tuple[Path, TrainResult],
    export_format: ExportFormat,
    spine_ct_path: Path,
    tmp_path: Path,
) -> None:
    root, _ = trained
    result = export_archive(Archive.open(root), export_format)
    assert result.path.is_file() and result.max_abs_diff <= 1e-4
    assert result.input_shape == (1, 1, 48, 40, 32)
    assert sorted(p.name for p in result.path.parent.iterdir() if p.name.startswith(".")) == []
    # The export alone serves: no training config, no weights (what Clara 4 uploads).
    alone = tmp_path / f"only_{result.path.suffix[1:]}"
    (alone / "config").mkdir(parents=True)
    config = json.loads((root / "config" / "config_aiaa.json").read_text())
    config["model_file"] = f"models/{result.path.name}"
    (alone / "config" / "config_aiaa.json").write_text(json.dumps(config))
    (alone / "models").mkdir()
    shutil.copy(result.path, alone / "models" / result.path.name)
    by_export = Predictor.from_archive(Archive.open(alone)).predict(spine_ct_path).volume
    by_torch = Predictor.from_archive(Archive.open(root)).predict(spine_ct_path).volume
    assert by_export.shape == by_torch.shape
    assert (by_export.array != by_torch.array).mean() < 1e-3
    if export_format == ExportFormat.TORCHSCRIPT:
        by_script = Predictor.from_archive(Archive.open(root)).predict(spine_ct_path)
        result.path.unlink()
        by_weights = Predictor.from_archive(Archive.open(root)).predict(spine_ct_path)
        changed = (by_script.volume.array != by_weights.volume.array).mean()
        assert changed < 1e-3
        assert by_script.volume.shape == load_volume(spine_ct_path).shape
