"""The shipped archives reproduce their held-out metrics; zoo builds are reproducible."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from carina.archive import Archive
from carina.archive.pack import sha256_file
from carina.cli.main import app
from carina.kinds import validate_archive
from carina.zoo import load_index
from carina.zoo.build import build_archive
from carina.zoo.index import ZOO_ROOT
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


def package_zoo_files() -> dict[str, tuple[int, int]]:
    """Size and modification time of every file of the installed package's zoo."""
    return {
        str(p.relative_to(ZOO_ROOT)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in ZOO_ROOT.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_zoo_build_is_reproducible_and_writes_the_named_folder_alone(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    quick = {"epochs": 1, "iterations_per_epoch": 6, "val_interval": 1}
    before = package_zoo_files()
    monkeypatch.setenv("CARINA_DATA_DIR", str(data_dir))
    monkeypatch.chdir(tmp_path)
    sets = [a for key, value in quick.items() for a in ("--set", f"{key}={value}")]
    built = CliRunner().invoke(app, ["zoo", "build", "spine_ct_vertebrae", *sets])
    assert built.exit_code == 0, built.output
    first = tmp_path / "zoo" / "archives" / "spine_ct_vertebrae"  # the default: ./zoo
    second = build_archive(
        "spine_ct_vertebrae", output=tmp_path / "b", data_dir=data_dir, overrides=quick
    )
    assert second.path == tmp_path / "b" / "archives" / "spine_ct_vertebrae"
    entries = [load_index(folder / "index.json") for folder in (tmp_path / "zoo", tmp_path / "b")]
    assert entries[0]["spine_ct_vertebrae"].metrics == entries[1]["spine_ct_vertebrae"].metrics
    weights = [
        torch.load(p / "models" / "model.pt", weights_only=True) for p in (first, second.path)
    ]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert (first / "manifest.json").is_file()
    assert not (first / "models" / "checkpoint_last.pt").exists()
    assert entries[1]["spine_ct_vertebrae"].sha256 == sha256_file(second.path / "manifest.json")
    assert package_zoo_files() == before, "zoo build wrote into the installed package"


def test_zoo_configs_are_the_example_configs() -> None:
    from carina.zoo import zoo_archive_path
    from carina.zoo.build import EXAMPLES

    for name in load_index():
        shipped = zoo_archive_path(name) / "config"
        example = EXAMPLES / name / "config"
        files = sorted(p.name for p in example.iterdir())
        assert files == sorted(p.name for p in shipped.iterdir())
        for file in files:
            assert (shipped / file).read_text() == (example / file).read_text(), f"{name}/{file}"
