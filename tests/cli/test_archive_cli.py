"""``carina archive``, ``train``, ``validate``, ``infer`` and ``export`` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from carina.cli.main import app

runner = CliRunner()


@pytest.fixture
def cli_data_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path_factory.getbasetemp() / "cli-datasets"
    monkeypatch.setenv("CARINA_DATA_DIR", str(folder))
    return folder


def invoke(*arguments: str) -> str:
    result = runner.invoke(app, list(arguments))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_new_check_train_validate_infer_export_pack(
    tmp_path: Path, cli_data_dir: Path, spine_ct_path: Path
) -> None:
    archive = tmp_path / "vertebra"
    assert "created" in invoke("archive", "new", str(archive), "--dataset", "spine_ct_vertebra")
    assert "components build" in invoke("archive", "check", str(archive))
    trained = invoke(
        "train", str(archive), "--set", "epochs=1", "--set", "iterations_per_epoch=5",
        "--set", "val_interval=1",
    )  # fmt: skip
    assert "trained 1 epochs (5 steps)" in trained
    assert "mean Dice" in invoke("validate", str(archive))
    assert (
        json.loads((archive / "eval" / "metrics.json").read_text())["dataset"]
        == "spine_ct_vertebra"
    )
    out = tmp_path / "out"
    assert "sub-ct_label-22_ct_seg.nii.gz" in invoke(
        "infer", str(archive), str(spine_ct_path), "-o", str(out)
    )
    assert (out / "sub-ct_label-22_ct_seg.nii.gz").is_file()
    assert "max abs difference" in invoke("export", str(archive), "--format", "torchscript")
    assert "weights load" in invoke("archive", "check", str(archive))
    packed = tmp_path / "vertebra.zip"
    invoke("archive", "pack", str(archive), "-o", str(packed))
    invoke("archive", "unpack", str(packed), str(tmp_path / "copy"))
    assert (tmp_path / "copy" / "models" / "model.ts").is_file()


def test_errors_are_one_line(tmp_path: Path, cli_data_dir: Path) -> None:
    archive = tmp_path / "vertebra"
    invoke("archive", "new", str(archive), "--dataset", "spine_ct_vertebra")
    result = runner.invoke(app, ["train", str(archive), "--set", "epoks=2"])
    assert result.exit_code != 0
    assert "epoks: not a variable nor a top-level key" in str(result.exception)
    missing = runner.invoke(app, ["archive", "check", str(tmp_path / "nowhere")])
    assert missing.exit_code != 0 and "no such archive folder" in str(missing.exception)
