"""The path a research group takes first, played end to end as a new user runs it, from the folder
they start in: their own folder of scans (the exported spine CT without its dataset.json) to a
dataset, an archive that knows it, a short training, validation, a batch run on new scans with one
bad file, an ONNX export copied alone and run with onnxruntime (the same labels as carina infer),
a packed archive installed on a running server, and one segmentation through it."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner, Result

from carina.cli.main import app
from carina.io import load_volume
from tests.servers import ADMIN_TOKEN, ServerProcess, start_server

HELDOUT = "spine_ct_heldout.nii.gz"


def carina(*arguments: str, code: int = 0) -> Result:
    done = CliRunner().invoke(app, list(arguments))
    assert done.exit_code == code, f"carina {' '.join(arguments)}: {done.output}{done.exception}"
    return done


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user's working folder: every path below is relative to it, as typed."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workspace = tmp_path_factory.mktemp("server") / "workspace"
    workspace.mkdir()
    process = start_server(workspace)
    try:
        yield process
    finally:
        process.stop()


def test_my_folder_to_a_served_model(here: Path, server: ServerProcess) -> None:
    carina("data", "export", "spine_ct", "mydata")
    (here / "mydata" / "dataset.json").unlink()  # a folder of images and labels, nothing else

    found = carina("dataset", "init", "mydata", "--labels", "L2,L3,L4", "--modality", "CT")
    assert "1 training and 1 validation cases" in found.output, found.output
    document = json.loads((here / "mydata" / "dataset.json").read_text())
    assert document["split"]["seed"] == 0 and len(document["validation"]) == 1

    carina("archive", "new", "mymodel", "--dataset", "mydata")
    serving = json.loads((here / "mymodel" / "config" / "config_aiaa.json").read_text())
    assert serving["labels"] == ["L2", "L3", "L4"] and serving["modality"] == "CT"
    carina("train", "mymodel", "--set", "epochs=1")
    scored = carina("validate", "mymodel")
    assert "mean Dice" in scored.output
    metrics = json.loads((here / "mymodel" / "eval" / "metrics.json").read_text())
    assert set(metrics["per_label"]) == {"L2", "L3", "L4"}, metrics  # mydata's, not the shipped

    (here / "new_scans").mkdir()
    shutil.copy(here / "mydata" / "imagesTr" / HELDOUT, here / "new_scans" / HELDOUT)
    (here / "new_scans" / "broken.nii.gz").write_text("not a scan")
    batch = carina("infer", "mymodel", "new_scans", "-o", "predictions", code=1)
    assert "segmented 1 of 2; 1 skipped" in batch.output
    with (here / "predictions" / "volumes.csv").open() as stream:
        rows = {row["case"]: row for row in csv.DictReader(stream)}
    assert rows["broken"]["status"] == "skipped" and rows["spine_ct_heldout"]["L3 (mL)"]
    labels = np.asarray(load_volume(here / "predictions" / "spine_ct_heldout_seg.nii.gz").array)

    carina("export", "mymodel", "--format", "onnx")
    (here / "shared").mkdir()
    shutil.copy(here / "mymodel" / "models" / "model.onnx", here / "shared" / "model.onnx")
    onnx_labels = _run_onnx_alone(here / "shared" / "model.onnx", here / "new_scans" / HELDOUT)
    assert np.mean(onnx_labels == labels) > 0.999

    carina("archive", "pack", "mymodel", "-o", "mymodel.zip")
    client = ("client", "--server", server.url, "--admin-token", ADMIN_TOKEN)
    carina(*client, "admin", "install", "mymodel", "mymodel.zip")
    target = "served_seg.nii.gz"
    carina(*client, "segment", "--model", "mymodel", f"new_scans/{HELDOUT}", "-o", target)
    served = np.asarray(load_volume(here / target).array)
    assert np.array_equal(served, labels)


def _run_onnx_alone(model: Path, image: Path) -> np.ndarray:
    """The label map of ``image`` from the ONNX file with onnxruntime, on the sliding window and
    intensity window its metadata states (no Carina code)."""
    import nibabel as nib
    import onnxruntime
    import torch
    from monai.inferers import sliding_window_inference

    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    (step,) = json.loads(meta["carina.preprocessing"])
    voxels = np.asarray(nib.load(image).dataobj, dtype=np.float32)
    scaled = np.clip((voxels - step["a_min"]) / (step["a_max"] - step["a_min"]), 0, 1)
    scaled = scaled * (step["b_max"] - step["b_min"]) + step["b_min"]

    def network(window: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {"image": window.numpy()})[0])

    scores = sliding_window_inference(
        torch.from_numpy(scaled)[None, None],
        roi_size=json.loads(meta["carina.roi_size"]),
        sw_batch_size=1,
        predictor=network,
        overlap=float(meta["carina.overlap"]),
    )
    return np.asarray(scores[0].argmax(0).numpy(), dtype=np.uint8)
