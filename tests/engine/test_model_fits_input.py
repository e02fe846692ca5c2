"""A model given an input it cannot use says so in one line naming both, never a traceback, a 500
or a silent empty mask: a 2D PNG to a 3D model (command line and server), a CUDA device this
machine lacks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from carina.cli.main import app
from carina.errors import ConfigError
from carina.server.app import create_app
from carina.settings import Settings
from carina.zoo.install import zoo_archive_path

MODEL = "spine_ct_vertebrae"


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
