"""Backends: ONNX Runtime selectable per model and globally, with the worker's threads; bf16 only on
a CPU with native bf16, for an archive whose recorded check passed, was faster and holds for its
weights on this CPU model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from carina.archive import Archive
from carina.data import get_dataset
from carina.engine import backends
from carina.engine.agreement import check_bf16
from carina.engine.export import ExportFormat, export_archive
from carina.engine.network import OnnxNetwork
from carina.engine.predict import Predictor
from carina.errors import ArchiveError
from carina.io import Volume
from carina.zoo.install import zoo_archive_path
from tests.engine.test_plan import dice_per_label

MODEL = "spine_ct_vertebrae"


@pytest.fixture(scope="module")
def ct() -> Volume:
    return get_dataset("spine_ct").build().image


@pytest.fixture
def archive_root(tmp_path: Path) -> Path:
    root = tmp_path / MODEL
    shutil.copytree(zoo_archive_path(MODEL), root)
    return root


def set_backend(root: Path, backend: str) -> None:
    path = root / "config" / "config_aiaa.json"
    config = json.loads(path.read_text())
    config["backend"] = backend
    path.write_text(json.dumps(config))


def test_onnx_is_chosen_per_model_and_agrees_with_pytorch(archive_root: Path, ct: Volume) -> None:
    export_archive(Archive.open(archive_root), ExportFormat.ONNX)
    torch_run = Predictor.from_archive(Archive.open(archive_root), device="cpu")
    set_backend(archive_root, "onnx")
    torch.set_num_threads(1)
    try:
        onnx_run = Predictor.from_archive(Archive.open(archive_root), device="cpu")
    finally:
        torch.set_num_threads(2)
    assert isinstance(onnx_run.network, OnnxNetwork)
    assert onnx_run.network.session.get_session_options().intra_op_num_threads == 1
    ours = onnx_run.predict(ct).volume.array
    reference = torch_run.predict(ct).volume.array
    scores = dice_per_label(ours, reference)
    assert scores and all(score >= 0.99 for score in scores.values()), scores
    assert not isinstance(torch_run.network, OnnxNetwork)


def test_the_setting_chooses_onnx_for_every_model_and_names_a_missing_export(
    archive_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CARINA_INFERENCE_BACKEND", "onnx")
    with pytest.raises(ArchiveError, match=r"models/model\.onnx does not exist.*carina export"):
        Predictor.from_archive(Archive.open(archive_root), device="cpu")
    set_backend(archive_root, "torch")  # the model's own choice wins
    predictor = Predictor.from_archive(Archive.open(archive_root), device="cpu")
    assert not isinstance(predictor.network, OnnxNetwork)


def test_bf16_only_with_native_bf16_and_a_passed_faster_check(
    archive_root: Path, ct: Volume, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = Archive.open(archive_root)
    check = check_bf16(archive, {"spine_ct": ct}, device="cpu")
    record = json.loads((archive_root / backends.BF16_RECORD).read_text())
    assert record["scores"]["spine_ct"] and record["cpu"] == backends.cpu_model()
    assert record["passed"] == check.passed and set(record["seconds"]) == {"ours", "reference"}
    assert record["native_bf16"] == backends.native_bf16()

    cpu = torch.device("cpu")
    weights = archive_root / "models" / "model.pt"
    record.update(passed=True, faster=True)
    (archive_root / backends.BF16_RECORD).write_text(json.dumps(record))
    monkeypatch.setattr(backends, "native_bf16", lambda: False)
    assert backends.choose_precision(cpu, "auto", archive_root, weights) == "fp32"
    monkeypatch.setattr(backends, "native_bf16", lambda: True)
    assert backends.choose_precision(cpu, "auto", archive_root, weights) == "bf16"
    assert backends.choose_precision(cpu, "torch", archive_root, weights) == "fp32"
    assert Predictor.from_archive(Archive.open(archive_root), device="cpu").precision == "bf16"

    for change in ({"faster": False}, {"passed": False}, {"cpu": "another CPU"}):
        (archive_root / backends.BF16_RECORD).write_text(json.dumps({**record, **change}))
        assert backends.choose_precision(cpu, "auto", archive_root, weights) == "fp32", change
    (archive_root / backends.BF16_RECORD).write_text(json.dumps(record))
    state = torch.load(weights, weights_only=True)
    first = next(iter(state))
    state[first] = state[first] + 1e-3
    torch.save(state, weights)  # new weights need a new check
    assert backends.choose_precision(cpu, "auto", archive_root, weights) == "fp32"


def test_bf16_autocast_runs_and_cuda_gets_fp16() -> None:
    network = torch.nn.Conv3d(1, 2, 3, padding=1)
    sample = torch.from_numpy(np.ones((1, 1, 8, 8, 8), np.float32))
    with torch.inference_mode(), backends.autocast(torch.device("cpu"), "bf16"):
        assert network(sample).dtype == torch.bfloat16
    with backends.autocast(torch.device("cpu"), "fp32"):
        assert network(sample).dtype == torch.float32
    root = Path("/nonexistent")
    assert backends.choose_precision(torch.device("cuda"), "auto", root, root) == "fp16"
    assert backends.choose_precision(torch.device("cuda"), "onnx", root, root) == "fp32"


def test_the_onnx_export_is_one_file_that_runs_alone(archive_root: Path, tmp_path: Path) -> None:
    """Copied alone, the export runs in onnxruntime on any size that is a multiple of its
    ``carina.spatial_multiple``, and says what else a script needs in its metadata."""
    import onnxruntime

    export_archive(Archive.open(archive_root), ExportFormat.ONNX)
    assert [p.name for p in (archive_root / "models").glob("*onnx*")] == ["model.onnx"]
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(archive_root / "models" / "model.onnx", alone / "model.onnx")
    session = onnxruntime.InferenceSession(str(alone / "model.onnx"))
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["carina.labels"]) == ["L2", "L3", "L4"]
    multiple = int(meta["carina.spatial_multiple"])
    assert multiple == 8
    assert json.loads(meta["carina.preprocessing"])[0]["_target_"] == "ScaleIntensityRanged"
    serving = json.loads((archive_root / "config" / "config_aiaa.json").read_text())
    assert json.loads(meta["carina.roi_size"]) == serving["inferer"]["roi_size"]
    assert float(meta["carina.overlap"]) == serving["inferer"].get("overlap", 0.25)
    for shape in ((multiple * 10, multiple * 6, multiple * 5), (multiple * 3,) * 3):
        image = np.zeros((1, 1, *shape), np.float32)
        assert session.run(None, {"image": image})[0].shape == (1, 4, *shape)
