"""Datastore fixtures: the shipped spine CT and MR exported in the MSD layout (once), and a fresh
workspace datastore."""

from __future__ import annotations

from pathlib import Path

import pytest

from carina.datastore import LocalDatastore, open_datastore


@pytest.fixture(scope="session")
def spine_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``carina data export spine_ct``: two halves of the real CT with their vertebra labels."""
    from carina.data.msd import export_dataset

    folder = tmp_path_factory.mktemp("spine_ct")
    export_dataset("spine_ct", folder)
    return folder


@pytest.fixture
def store(tmp_path: Path) -> LocalDatastore:
    return open_datastore(tmp_path / "workspace", max_bytes=2**30)
