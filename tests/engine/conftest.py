"""Engine fixtures: one short training of the spine CT example archive, shared by the tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from carina.archive import Archive
from carina.engine.train import TrainOptions, TrainResult, train_archive
from tests.archive.conftest import copy_example

#: The short training of the default suite: 300 steps (the full archive trains 1200).
SHORT = {"epochs": 3, "val_interval": 3}


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shipped datasets exported once for the engine tests (or CARINA_DATA_DIR's, when set)."""
    preset = os.environ.get("CARINA_DATA_DIR")
    return Path(preset) if preset else tmp_path_factory.mktemp("datasets")


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[Path, TrainResult]:
    """The spine CT archive after a short training run."""
    root = copy_example("spine_ct_vertebrae", tmp_path_factory.mktemp("trained") / "spine")
    result = train_archive(Archive.open(root, overrides=SHORT), TrainOptions(data_dir=data_dir))
    return root, result
