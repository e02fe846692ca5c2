"""Zoo fixtures: the shipped datasets' held-out halves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from carina.data import ensure_dataset
from carina.io import Volume, load_volume
from carina.zoo import install_archive, load_index

#: Every archive the zoo ships.
ZOO = (
    "spine_ct_vertebrae",
    "brain_mr_tissue",
    "deepgrow_2d",
    "deepgrow_3d",
    "annotation_dextr3d",
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The spine and brain datasets, exported once per module."""
    folder = tmp_path_factory.mktemp("datasets")
    for name in ("spine_ct", "spine_mr", "brain_mr"):
        ensure_dataset(name, folder / name)
    return folder


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with every archive of the zoo's index installed."""
    folder = tmp_path_factory.mktemp("workspace")
    for name in load_index():
        install_archive(name, folder)
    return folder


def heldout(data_dir: Path, dataset: str) -> tuple[Volume, np.ndarray]:
    """The held-out half of a dataset: image and label array."""
    image = load_volume(data_dir / dataset / "imagesTr" / f"{dataset}_heldout.nii.gz")
    labels = np.asarray(
        load_volume(data_dir / dataset / "labelsTr" / f"{dataset}_heldout.nii.gz").array
    )
    return image, labels


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks."""
    return float(2 * (prediction & truth).sum() / (prediction.sum() + truth.sum()))
