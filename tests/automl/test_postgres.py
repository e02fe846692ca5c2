"""The same study on a real PostgreSQL server (started by the test on 127.0.0.1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from carina.automl.run import run_study
from carina.automl.study import AutoMLError, StudySpec, open_storage
from tests.automl.conftest import queue_with_a_poor_last_trial, search_archive
from tests.automl.test_study import check_finished_study

pytestmark = pytest.mark.integration


def test_two_workers_on_postgresql(tmp_path: Path, data_dir: Path, postgres_url: str) -> None:
    archive = search_archive(tmp_path / "archive")
    spec = StudySpec(archive=archive, study="lr_pg", trials=12, storage=postgres_url)
    queue_with_a_poor_last_trial(spec)
    outcome = run_study(spec, workers=2, data_dir=data_dir, threads=1)
    assert outcome.result is not None, [p.read_text()[-2000:] for p in outcome.logs]
    assert not (archive / "automl" / "lr_pg" / "study.journal").exists()
    check_finished_study(archive, "lr_pg", postgres_url, 12)


def test_an_unreachable_database_is_named_without_its_password() -> None:
    with pytest.raises(AutoMLError, match=r"postgresql://carina:\*\*\*@127\.0\.0\.1:1/x") as caught:
        open_storage("postgresql://carina:secret@127.0.0.1:1/x")
    assert "secret" not in str(caught.value)
