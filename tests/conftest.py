"""Shared fixtures: small seeded synthetic data and the real shipped volumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from carina.data import Case, locate_sample, synthetic_case
from carina.data.dicom_series import write_dicom_series
from carina.io import Volume, load_volume


def oblique_affine(spacing: tuple[float, float, float] = (0.7, 0.9, 2.5)) -> np.ndarray:
    """A RAS affine with a rotation about two axes, anisotropic spacing and an offset origin."""
    a, b = np.deg2rad(17.0), np.deg2rad(-8.0)
    rot_z = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rot_x = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rot_z @ rot_x @ np.diag(spacing)
    affine[:3, 3] = [-101.25, 37.5, -12.125]
    return affine


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``gpu`` when CUDA is not available."""
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture
def synthetic() -> Case:
    """A seeded 32^3 image with two labelled ellipsoids."""
    return synthetic_case((32, 32, 32), labels=2, seed=7)


@pytest.fixture(scope="session")
def spine_ct_path() -> Path:
    """The shipped tptbox spine CT."""
    return locate_sample("spine_ct_image")


@pytest.fixture(scope="session")
def spine_ct(spine_ct_path: Path) -> Volume:
    """The shipped tptbox spine CT, read by Carina."""
    return load_volume(spine_ct_path)


@pytest.fixture(scope="session")
def ct_series(tmp_path_factory: pytest.TempPathFactory, spine_ct: Volume) -> Path:
    """A real multi-slice CT DICOM series written from the tptbox CT (pixels and geometry)."""
    folder = tmp_path_factory.mktemp("ct_series")
    write_dicom_series(spine_ct, folder, description="spine CT")
    return folder
