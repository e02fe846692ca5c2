"""Interactive models learn from the datastore too: DeepGrow 2D/3D and DExtr3D archives train on
the final labels with simulated clicks (as their zoo recipes do), starting from the served zoo
model, and are scored against it on the same validation image."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from carina.datastore import import_folder, open_datastore
from carina.learning import history, train_from_datastore
from carina.zoo import install_archive

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "archives"


@pytest.mark.parametrize("name", ["deepgrow_2d", "deepgrow_3d", "annotation_dextr3d"])
def test_interactive_archive_trains_from_final_labels(
    tmp_path: Path, spine_export: Path, name: str
) -> None:
    workspace = tmp_path / "ws"
    import_folder(open_datastore(workspace, max_bytes=2**30), spine_export)
    install_archive(name, workspace)  # the served model the job starts from
    archive = tmp_path / name
    shutil.copytree(EXAMPLES / name, archive, ignore=shutil.ignore_patterns("models", "eval"))
    path = archive / "config" / "config_train.json"
    config = json.loads(path.read_text())
    config.update(epochs=1, iterations_per_epoch=6, val_interval=1, cache="none")
    path.write_text(json.dumps(config))
    result = train_from_datastore(
        archive, workspace, max_bytes=2**30, data_dir=tmp_path / "data", device="cpu"
    )
    decision = result.decision
    assert decision.served_dice is not None and 0.0 <= decision.candidate_dice <= 1.0
    assert history(workspace / "models", name)[-1]["candidate_dice"] == decision.candidate_dice
    record = json.loads((result.folder / "job.json").read_text())
    assert record["status"] == "DONE" and record["progress"]["epochs"] == 1
