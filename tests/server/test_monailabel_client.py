"""MONAI Label's own Python client (``MONAILabelClient`` from the ``monailabel`` wheel, installed
without its dependencies in ``.tools/monailabel`` by ``make tools``) drives a Carina server with
sign-in on; and two replicas on one workspace see each other's labels and training at once."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from carina.auth import Role, UserStore
from tests.servers import ServerProcess, start_server

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TOOLS_PYTHON = ROOT / ".tools" / "monailabel" / "bin" / "python"
SCRIPT = Path(__file__).with_name("monailabel_client_run.py")
PASSWORD = "a long test password"


@pytest.fixture
def signed_in_server(tmp_path: Path, model_store: Path) -> Iterator[ServerProcess]:
    """A server with the test models, the trainable example archive, and an admin user."""
    workspace = tmp_path / "workspace"
    shutil.copytree(model_store, workspace / "models")
    UserStore(workspace).add("ada", PASSWORD, [Role.ADMIN])
    running = start_server(workspace)
    try:
        yield running
    finally:
        running.stop()


def test_monai_label_client_drives_carina(
    signed_in_server: ServerProcess, spine_ct_path: Path, tmp_path: Path
) -> None:
    if not TOOLS_PYTHON.is_file():
        pytest.fail("MONAI Label's client is not installed: run `make tools`")
    image = tmp_path / "spine_ct.nii.gz"
    shutil.copy(spine_ct_path, image)
    work = tmp_path / "client"
    work.mkdir()
    command = [str(TOOLS_PYTHON), str(SCRIPT), signed_in_server.url, str(image), str(work)]
    done = subprocess.run(
        [*command, "ada", PASSWORD], capture_output=True, text=True, timeout=400, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["auth_enabled"] is True and out["info_without_token"] == 401
    assert out["token_type"] == "Bearer" and out["token_valid"] is True
    assert "spine_ct_vertebrae" in out["models"] and out["trainers"] == ["spine_ct_vertebrae"]
    assert out["upload"] == {"image": "spine ct"}
    assert out["next"]["id"] == "spine ct"
    assert out["infer_file"] == "result.nii.gz" and out["infer_size"] > 1000
    assert out["infer_label_names"] == {"L2": 1, "L3": 2, "L4": 3}
    assert out["save"]["image"] == "spine ct"
    assert "final" in out["datastore_tags"]
    assert out["download"] == [".nii", ".gz"]
    assert out["train_start"]["status"] in ("SUBMITTED", "RUNNING")
    assert out["train_running_seen"] is True
    assert out["train_status"] in ("SUBMITTED", "RUNNING")
    assert out["train_stop"]["details"], "Slicer reads details[-1]"
    assert out["train_after_stop"] in ("STOPPED", "ERROR", "DONE")
    assert out["infer_again"] == "result.nii.gz"
    assert out["session_keys"] == ["session_id", "session_info"]
    assert out["session_get"] is True and out["session_after_delete"] == "gone"
    assert out["session_infer_label_names"] == {"L2": 1}, "the datastore's first label"
    audit = (signed_in_server.log.parent / "workspace" / "audit").glob("*.jsonl")
    lines = [json.loads(line) for path in audit for line in path.read_text().splitlines()]
    actions = {(event["actor"], event["action"]) for event in lines}
    for action in ("sign_in", "upload_image", "infer", "save_label", "train", "stop_train"):
        assert ("ada", action) in actions, action
    assert "spine ct" not in json.dumps(lines), "image ids never reach the audit log"


def test_two_replicas_see_each_other(
    tmp_path: Path, model_store: Path, spine_ct_path: Path
) -> None:
    workspace = tmp_path / "workspace"
    shutil.copytree(model_store, workspace / "models")
    first, second = start_server(workspace), start_server(workspace)
    try:
        data = spine_ct_path.read_bytes()
        put = httpx.put(
            f"{first.url}/datastore/image?image=shared",
            files={"file": ("ct.nii.gz", data)}, timeout=60,
        )  # fmt: skip
        assert put.status_code == 200, put.text
        label = httpx.get(f"{first.url}/datastore/image?image=shared", timeout=60)
        assert label.status_code == 200
        start = time.monotonic()
        saved = httpx.put(
            f"{first.url}/datastore/label?image=shared&tag=final",
            files={"label": ("label.nii.gz", _empty_label(spine_ct_path))}, timeout=60,
        )  # fmt: skip
        assert saved.status_code == 200, saved.text
        while True:
            listed = httpx.get(f"{second.url}/datastore/?output=all", timeout=10).json()
            if "final" in listed["objects"]["shared"]["labels"]:
                break
            assert time.monotonic() - start < 2.0, "the other replica lists the label within 2 s"
            time.sleep(0.05)
        started = httpx.post(f"{first.url}/train/spine_ct_vertebrae", json={}, timeout=60)
        assert started.status_code == 200, started.text
        running = httpx.get(f"{second.url}/train/?check_if_running=true", timeout=10)
        assert running.status_code == 200 and running.json()["status"] in ("SUBMITTED", "RUNNING")
        busy = httpx.post(f"{second.url}/train/spine_ct_vertebrae", json={}, timeout=60)
        assert busy.status_code == 429, "one job per model across replicas"
        stopped = httpx.delete(f"{second.url}/train/", timeout=60)
        assert stopped.status_code == 200 and stopped.json()["details"]
        deadline = time.monotonic() + 120
        while httpx.get(f"{first.url}/train/?check_if_running=true", timeout=10).status_code == 200:
            assert time.monotonic() < deadline
            time.sleep(0.5)
    finally:
        first.stop()
        second.stop()


def _empty_label(image_path: Path) -> bytes:
    import gzip

    import nibabel as nib
    import numpy as np

    image = nib.load(image_path)
    label = nib.Nifti1Image(np.zeros(image.shape, np.uint8), image.affine)
    return gzip.compress(label.to_bytes())
