"""The learning loop end to end on the command line, on the shipped spine CT and MR: import, next
image, the served model's output saved as ``original``, the truth as ``final``, a short training
job promoted; a job trained from bad labels refused with both figures; rollback; a second job
while one runs refused; a job killed mid-epoch leaves the served model and no lock behind."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from carina.cli.main import app
from carina.datastore import FINAL, open_datastore
from carina.io import load_volume, save_volume

runner = CliRunner()
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "archives" / "spine_vertebra"


def run(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


@pytest.fixture(scope="module")
def vertebra_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CT and MR halves (one 'vertebra' label), images and dataset.json only, and the truth."""
    from carina.data.msd import export_dataset

    root = tmp_path_factory.mktemp("vertebra")
    for name in ("spine_ct_vertebra", "spine_mr_vertebra"):
        export_dataset(name, root / name)
    return root


def short_archive(target: Path, *, epochs: int = 2, iterations: int = 15) -> Path:
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("models", "eval", "logs"))
    path = target / "config" / "config_train.json"
    config = json.loads(path.read_text())
    config.update(epochs=epochs, iterations_per_epoch=iterations, val_interval=1, cache="none")
    path.write_text(json.dumps(config))
    return target


def weights_digest(workspace: Path) -> str:
    return hashlib.sha256(
        (workspace / "models/spine_vertebra/models/model.pt").read_bytes()
    ).hexdigest()


def test_annotate_train_promote_refuse_rollback(tmp_path: Path, vertebra_images: Path) -> None:
    workspace = tmp_path / "ws"
    ws = ["--workspace", str(workspace)]
    for name in ("spine_ct_vertebra", "spine_mr_vertebra"):  # images and splits, no labels yet
        only_images = tmp_path / name
        shutil.copytree(vertebra_images / name / "imagesTr", only_images / "imagesTr")
        shutil.copy(vertebra_images / name / "dataset.json", only_images / "dataset.json")
        run("datastore", "import", str(only_images), *ws)
    store = open_datastore(workspace, max_bytes=2**30)
    assert {r.split for r in store.images()} == {"training", "validation"}
    truth = {r.id: _truth(vertebra_images, r.id) for r in store.images()}
    for image_id in ("spine_ct_vertebra_train", "spine_ct_vertebra_heldout"):
        run("datastore", "label", image_id, str(truth[image_id]), "--by", "annotator", *ws)
    archive = short_archive(tmp_path / "spine_vertebra")
    first = run("train", str(archive), "--datastore", str(workspace), "--device", "cpu")
    assert "promoted" in first and "served: none" in first

    chosen = run("datastore", "next", "--strategy", "first", *ws).strip()
    assert chosen.startswith("spine_mr_vertebra")
    image_file = str(store.image_path(chosen))
    run("infer", str(workspace / "models/spine_vertebra"), image_file, "-o", str(tmp_path / "out"))
    [output] = (tmp_path / "out").glob("*_seg.nii.gz")
    run("datastore", "label", chosen, str(output), "--tag", "original", "--by", "model", *ws)
    for image_id in ("spine_mr_vertebra_train", "spine_mr_vertebra_heldout"):
        run("datastore", "label", image_id, str(truth[image_id]), "--by", "annotator", *ws)
    assert json.loads(run("datastore", "stats", *ws))["by_status"] == {"labelled": 4}
    second = run("train", str(archive), "--datastore", str(workspace), "--device", "cpu")
    assert "served: " in second and "none" not in second

    served = weights_digest(workspace)
    for record in store.images():
        if record.split == "training":  # planted bad labels: nothing is a vertebra
            image = load_volume(record.labels[FINAL].path)
            bad = tmp_path / f"bad-{record.id}.nii.gz"
            save_volume(image.with_array(np.zeros(image.shape, np.uint8)), bad)
            store.save_label(record.id, bad, saved_by="careless")
    third = run("train", str(archive), "--datastore", str(workspace), "--device", "cpu")
    assert "refused" in third and weights_digest(workspace) == served
    history = json.loads(run("model", "history", "spine_vertebra", *ws))
    assert [h["action"] for h in history][-1] == "refuse"
    assert history[-1]["candidate_dice"] < history[-1]["served_dice"]
    assert "restored" in run("model", "rollback", "spine_vertebra", *ws)
    assert weights_digest(workspace) != served
    run(
        "infer", str(workspace / "models/spine_vertebra"), image_file, "-o", str(tmp_path / "again")
    )
    assert len(list((tmp_path / "again").glob("*_seg.nii.gz"))) == 1


def _truth(root: Path, image_id: str) -> Path:
    dataset = image_id.rsplit("_", 1)[0]
    return root / dataset / "labelsTr" / f"{image_id}.nii.gz"


JOB = """
import sys
from pathlib import Path
from carina.learning import train_from_datastore
train_from_datastore(Path(sys.argv[1]), Path(sys.argv[2]), max_bytes=2**30,
                     data_dir=Path(sys.argv[3]), device="cpu")
"""


@pytest.mark.integration
def test_one_job_at_a_time_and_a_killed_job_leaves_nothing_held(
    tmp_path: Path, vertebra_images: Path
) -> None:
    from carina.errors import DatastoreError
    from carina.learning import train_from_datastore

    workspace = tmp_path / "ws"
    store = open_datastore(workspace, max_bytes=2**30)
    from carina.datastore import import_folder

    import_folder(store, vertebra_images / "spine_ct_vertebra")
    short = short_archive(tmp_path / "short" / "spine_vertebra", epochs=1, iterations=5)
    train_from_datastore(short, workspace, max_bytes=2**30, data_dir=tmp_path / "data")
    served = weights_digest(workspace)
    archive = short_archive(tmp_path / "spine_vertebra", epochs=50, iterations=50)
    job = subprocess.Popen(
        [sys.executable, "-c", JOB, str(archive), str(workspace), str(tmp_path / "data")]
    )
    lock = workspace / "jobs" / "spine_vertebra.lock"
    deadline = time.monotonic() + 120
    while len(list((workspace / "jobs").glob("spine_vertebra/*/job.json"))) < 2:
        assert time.monotonic() < deadline and job.poll() is None
        time.sleep(0.2)
    with pytest.raises(DatastoreError, match="already running"):
        train_from_datastore(archive, workspace, max_bytes=2**30, data_dir=tmp_path / "data")
    time.sleep(3)  # into the first epoch
    job.send_signal(signal.SIGKILL)
    job.wait(30)
    assert lock.exists() and weights_digest(workspace) == served  # the served model untouched
    result = train_from_datastore(short, workspace, max_bytes=2**30, data_dir=tmp_path / "data")
    assert result.decision.served_dice is not None and not lock.exists()


@pytest.mark.integration
def test_a_background_job_reports_progress_and_stops_on_request(
    tmp_path: Path, vertebra_images: Path
) -> None:
    import os

    from carina.datastore import import_folder
    from carina.errors import DatastoreError
    from carina.learning import latest_job, request_stop, start_training

    workspace = tmp_path / "ws"
    import_folder(open_datastore(workspace, max_bytes=2**30), vertebra_images / "spine_ct_vertebra")
    archive = short_archive(tmp_path / "spine_vertebra", epochs=50, iterations=50)
    pid = start_training(archive, workspace, device="cpu")
    deadline = time.monotonic() + 120
    while ((latest_job(workspace, "spine_vertebra") or {}).get("progress") or {}).get(
        "epoch"
    ) is None:
        assert time.monotonic() < deadline
        time.sleep(0.3)
    with pytest.raises(DatastoreError, match="already running"):
        start_training(archive, workspace)
    assert request_stop(workspace, "spine_vertebra") is not None
    while latest_job(workspace, "spine_vertebra")["status"] == "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    os.waitpid(pid, 0)
    record = latest_job(workspace, "spine_vertebra")
    assert record["status"] == "STOPPED" and record["details"] == ["stopped on request"]
    assert not (workspace / "jobs" / "spine_vertebra.lock").exists()
    assert not (workspace / "models" / "spine_vertebra").exists()
