"""Archive fixtures: a copy of an example archive, and Clara-style archives written in the test."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "archives"


def copy_example(name: str, target: Path) -> Path:
    """A copy of ``examples/archives/NAME`` without trained outputs."""
    shutil.copytree(
        EXAMPLES / name, target, ignore=shutil.ignore_patterns("models", "eval", "logs", ".cache")
    )
    return target


def write_json(path: Path, content: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2))
    return path


@pytest.fixture
def spine_archive(tmp_path: Path) -> Path:
    """A fresh copy of the spine CT example archive."""
    return copy_example("spine_ct_vertebrae", tmp_path / "spine_ct_vertebrae")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for the shipped datasets exported during the tests."""
    return tmp_path_factory.mktemp("datasets")
