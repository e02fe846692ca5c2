"""AutoML fixtures: a small archive whose own learning rate is deliberately poor, the dataset it
trains on, and a PostgreSQL server started for the test on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from carina.archive import Archive
from carina.archive.search import strip_search
from carina.automl.space import own_params
from carina.automl.study import StudySpec, create_or_resume
from carina.data import ensure_dataset

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "archives" / "spine_vertebra"

#: The learning rate the test archive ships with: too small to learn in a few epochs.
POOR_LR = 1e-5


def search_archive(folder: Path, *, iterations: int = 12, epochs: int = 4) -> Path:
    """The vertebra example, trained on the CT half, with a poor learning rate and searches for
    the learning rate (log scale, slow rates included, so that the median pruner has trials to
    stop at epoch 2 or 3) and for switching the flip augmentation off."""
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("models", "eval", "logs"))
    path = folder / "config" / "config_train.json"
    config: dict[str, Any] = strip_search(json.loads(path.read_text()))  # the example's own blocks
    config.update(learning_rate=POOR_LR, iterations_per_epoch=iterations, epochs=epochs)
    config["search"] = [
        {"domain": "lr", "type": "float", "args": ["learning_rate"], "targets": [1e-4, 3e-2]}
    ]
    flip = config["train_preprocessing"][5]
    assert flip["_target_"] == "RandFlipd"
    flip["search"] = [
        {"domain": "transform", "type": "enum", "args": ["@disabled"], "targets": [[True], [False]]}
    ]
    path.write_text(json.dumps(config, indent=2))
    return folder


def queue_with_a_poor_last_trial(spec: StudySpec) -> None:
    """Create the study of ``spec`` with its last trial queued as a repeat of the poor first one.

    The sampler is not seeded, so its draws could all beat the median; a repeat of trial 0, run
    after at least two trials completed, falls below their median at epoch 2 whatever was drawn,
    so the pruner has one trial it must stop.
    """
    study = create_or_resume(replace(spec, trials=spec.trials - 1))
    study.enqueue_trial(own_params(Archive.open(spec.archive).search_space()))
    study.set_user_attr("trials", spec.trials)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CT vertebra dataset, exported once."""
    root = tmp_path_factory.mktemp("datasets")
    ensure_dataset("spine_ct_vertebra", root / "spine_ct_vertebra")
    return root


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server for the session (Debian's postgresql, as ``make test`` installs)."""
    from tests.servers import postgres_binaries, start_postgres

    if postgres_binaries() is None:
        pytest.fail(
            "PostgreSQL is not installed: run `make system-deps` (apt-get install postgresql)"
        )
    # Not under pytest's temp folder: that one is private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="carina-pg-"))
    server = start_postgres(root)
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
