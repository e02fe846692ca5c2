"""The shipped archives reproduce their held-out metrics; zoo builds are reproducible."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from carina.archive import Archive
from carina.kinds import validate_archive
from carina.zoo.build import build_archive
from tests.zoo.conftest import ZOO


@pytest.mark.parametrize("name", ZOO)
def test_zoo_archives_reproduce_their_metrics(workspace: Path, data_dir: Path, name: str) -> None:
    archive = workspace / "models" / name
    shipped = json.loads((archive / "eval" / "metrics.json").read_text())
    measured = validate_archive(Archive.open(archive), data_dir=data_dir)
    assert measured.mean_dice == pytest.approx(shipped["mean_dice"], abs=0.01)
    for label, score in shipped["per_label"].items():
        assert measured.per_label[label] == pytest.approx(score, abs=0.01)


def test_spine_archive_meets_its_target(workspace: Path) -> None:
    metrics = json.loads(
        (workspace / "models" / "spine_ct_vertebrae" / "eval" / "metrics.json").read_text()
    )
    assert metrics["mean_dice"] >= 0.80 and metrics["split"] == "validation"


def test_zoo_build_is_reproducible(tmp_path: Path, data_dir: Path) -> None:
    quick = {"epochs": 1, "iterations_per_epoch": 6, "val_interval": 1}
    first = build_archive(
        "spine_ct_vertebrae", output=tmp_path / "a", data_dir=data_dir, overrides=quick
    )
    second = build_archive(
        "spine_ct_vertebrae", output=tmp_path / "b", data_dir=data_dir, overrides=quick
    )
    assert first.metrics["mean_dice"] == second.metrics["mean_dice"]
    weights = [
        torch.load(r.path / "models" / "model.pt", weights_only=True) for r in (first, second)
    ]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert (first.path / "manifest.json").is_file() and not (
        first.path / "models" / "checkpoint_last.pt"
    ).exists()


def test_zoo_configs_are_the_example_configs() -> None:
    from carina.zoo import load_index, zoo_archive_path
    from carina.zoo.build import EXAMPLES

    for name in load_index():
        shipped = zoo_archive_path(name) / "config"
        example = EXAMPLES / name / "config"
        files = sorted(p.name for p in example.iterdir())
        assert files == sorted(p.name for p in shipped.iterdir())
        for file in files:
            assert (shipped / file).read_text() == (example / file).read_text(), f"{name}/{file}"
