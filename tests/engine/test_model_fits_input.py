"""A model given an input it cannot use says so in one line naming both, never a traceback, a 500
or a silent empty mask: a 2D PNG to a 3D model (command line and server), DeepGrow 2D on a PNG
(clicks of 2 or 3 coordinates), a DeepGrow model asked for plain segmentation, an MR given to a
model that declares CT (a warning), a CUDA device this machine lacks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from carina.cli.main import app
from carina.errors import ArchiveError, ConfigError
from carina.server.app import create_app
from carina.settings import Settings
from carina.zoo.install import zoo_archive_path

MODEL = "spine_ct_vertebrae"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A server with the shipped segmentation and DeepGrow models."""
    from carina.zoo import install_archive

    workspace = tmp_path_factory.mktemp("workspace")
    for name in (MODEL, "deepgrow_2d", "deepgrow_3d"):
        install_archive(name, workspace)
    settings = Settings(workspace=workspace, preload_models=False)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The spine CT as ``carina data export`` writes it (labels 1-3: L2, L3, L4)."""
    folder = tmp_path_factory.mktemp("data") / "spine_ct"
    done = CliRunner().invoke(app, ["data", "export", "spine_ct", str(folder)])
    assert done.exit_code == 0, done.output
    return folder


@pytest.fixture
def png(tmp_path: Path) -> Path:
    path = tmp_path / "slice.png"
    Image.fromarray((np.random.default_rng(0).random((64, 48)) * 255).astype(np.uint8)).save(path)
    return path


def test_a_2d_png_to_a_3d_model_on_the_command_line(png: Path, tmp_path: Path) -> None:
    done = CliRunner().invoke(
        app, ["infer", str(zoo_archive_path(MODEL)), str(png), "-o", str(tmp_path / "out")]
    )
    assert done.exit_code == 1 and "Traceback" not in done.output
    assert (
        f"skipped {png}: this model works on 3D greyscale images, not on a 2D image of 48x64 "
        "voxels" in done.output
    )


def test_a_2d_png_to_a_3d_model_on_the_server(png: Path, tmp_path: Path) -> None:
    from carina.zoo import install_archive

    install_archive(MODEL, tmp_path / "workspace")
    settings = Settings(workspace=tmp_path / "workspace", preload_models=False)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        answer = client.post(
            f"/v1/segmentation?model={MODEL}",
            files={"datapoint": ("slice.png", png.read_bytes())},
            data={"params": json.dumps({})},
        )
    assert answer.status_code == 400, answer.text
    assert "not on a 2D image of 48x64 voxels" in answer.text


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_asked_of_a_machine_without_it(tmp_path: Path) -> None:
    image = zoo_archive_path(MODEL)
    done = CliRunner().invoke(
        app,
        [
            "infer",
            str(image),
            str(image / "missing.nii.gz"),
            "-o",
            str(tmp_path),
            "--device",
            "cuda",
        ],
    )
    assert isinstance(done.exception, ConfigError)
    assert "this machine has no CUDA" in str(done.exception) and "use cpu" in str(done.exception)


def test_deepgrow_2d_on_a_png_takes_clicks_of_2_or_3_coordinates(
    server: TestClient, exported: Path, tmp_path: Path
) -> None:
    from carina.client.multipart import read_answer
    from carina.io import load_volume

    image = load_volume(exported / "imagesTr" / "spine_ct_heldout.nii.gz")
    label = np.asarray(load_volume(exported / "labelsTr" / "spine_ct_heldout.nii.gz").array)
    i, j, k = np.argwhere(label == 2).mean(0).round().astype(int)  # inside L3
    plane = np.clip((np.asarray(image.array)[:, :, k] + 200) / 1200 * 255, 0, 255)
    png = tmp_path / "l3.png"
    Image.fromarray(plane.astype(np.uint8).T).save(png)  # a PNG's rows are j, its columns i
    truth = label[:, :, k] == 2
    assert truth[i, j]
    for click in ([int(i), int(j)], [int(i), int(j), 0]):
        answer = server.post(
            "/v1/deepgrow?model=deepgrow_2d",
            files={"datapoint": ("l3.png", png.read_bytes())},
            data={"params": json.dumps({"foreground": [click], "background": []})},
        )
        assert answer.status_code == 200, answer.text
        result = read_answer(answer.content, answer.headers["content-type"])
        assert result.file is not None and result.filename
        mask = np.asarray(load_volume(_saved(tmp_path, result.filename, result.file)).array) > 0
        dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
        assert dice > 0.5, (click, dice)


def _saved(folder: Path, name: str, data: bytes) -> Path:
    path = folder / Path(name).name
    path.write_bytes(data)
    return path


def test_a_deepgrow_model_asked_for_plain_segmentation(
    server: TestClient, spine_ct_path: Path, tmp_path: Path
) -> None:
    from carina.zoo.install import zoo_archive_path

    done = CliRunner().invoke(
        app,
        ["infer", str(zoo_archive_path("deepgrow_3d")), str(spine_ct_path), "-o", str(tmp_path)],
    )
    assert isinstance(done.exception, ArchiveError)
    assert str(done.exception).startswith("deepgrow_3d is a DeepGrow model: it segments the")
    upload = {"datapoint": ("ct.nii.gz", spine_ct_path.read_bytes())}
    for model in ("deepgrow_2d", "deepgrow_3d"):
        answer = server.post(f"/v1/segmentation?model={model}", files=upload, data={"params": "{}"})
        assert answer.status_code == 400, answer.text
        assert "a DeepGrow model segments the structure under a person's clicks" in answer.text
    labelled = server.post(
        "/infer/deepgrow_3d", files={"file": ("ct.nii.gz", spine_ct_path.read_bytes())}
    )
    assert labelled.status_code == 400 and "give at least one foreground click" in labelled.text


def test_an_mr_given_to_a_model_that_declares_ct_warns(
    server: TestClient, spine_ct_path: Path, tmp_path: Path
) -> None:
    from carina.client.multipart import read_answer
    from carina.data import locate_sample
    from carina.zoo.install import zoo_archive_path

    mr = locate_sample("spine_mr_image")
    archive = zoo_archive_path(MODEL)  # its config_aiaa.json declares "modality": "CT"
    done = CliRunner().invoke(
        app, ["infer", str(archive), str(mr), str(spine_ct_path), "-o", str(tmp_path / "out")]
    )
    assert done.exit_code == 0, done.output
    warning = "warning: sub-mri_label-6_T2w.nii.gz has no voxel below -500 HU (no air)"
    assert warning in done.output and "trained on CT" in done.output
    assert done.output.count("warning:") == 1  # the CT itself runs without one
    for image, warned in ((mr, True), (spine_ct_path, False)):
        answer = server.post(
            f"/v1/segmentation?model={MODEL}",
            files={"datapoint": ("image.nii.gz", image.read_bytes())},
            data={"params": "{}"},
        )
        assert answer.status_code == 200
        params = read_answer(answer.content, answer.headers["content-type"]).params
        assert ("warnings" in params) is warned, params


def test_a_dicom_mr_series_names_its_modality(tmp_path: Path) -> None:
    from carina.data import locate_sample
    from carina.data.dicom_series import write_dicom_series
    from carina.engine.fit import modality_warning
    from carina.io import load_volume

    folder = tmp_path / "mr"
    folder.mkdir()
    write_dicom_series(load_volume(locate_sample("spine_mr_image")), folder, modality="MR")
    warning = modality_warning(load_volume(folder), "CT", "mr")
    assert warning == "mr is MR but this model was trained on CT: check the result"
    assert modality_warning(load_volume(folder), "MR") is None
