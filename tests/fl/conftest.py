"""Federated-learning fixtures: a fast copy of the FL example archive and the exported datasets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from carina.data import ensure_dataset

ROOT = Path(__file__).resolve().parents[2]
FL_ARCHIVE = ROOT / "examples" / "archives" / "spine_vertebra"


def quick_archive(folder: Path, *, iterations: int = 8) -> Path:
    """A copy of the FL example archive that trains ``iterations`` steps per epoch."""
    shutil.copytree(FL_ARCHIVE, folder, ignore=shutil.ignore_patterns("models", "eval", "logs"))
    config = folder / "config" / "config_train.json"
    content = json.loads(config.read_text())
    content["iterations_per_epoch"] = iterations
    config.write_text(json.dumps(content, indent=2))
    return folder


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The two vertebra datasets exported once for the whole session."""
    root = tmp_path_factory.mktemp("datasets")
    for name in ("spine_ct_vertebra", "spine_mr_vertebra"):
        ensure_dataset(name, root / name)
    return root
